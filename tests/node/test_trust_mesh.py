"""Three node processes on [::1]: a provider that returns wrong outputs is caught, shunned, and passed over.

B asks C to run a capsule and checks the answer by running it too
(`capsule run --on C --verify`); C's flag makes the capsule answer wrongly,
so C's signed receipt proves it. B shuns C, refuses it from then on, and,
offered both C and the honest A, sends the work to A.
"""

import json

import pytest
import wasmtime

from cli_testkit import hm
from hypermesh.node.processes import start_node

# echo, unless the node's own kv says mode "1": then the constant "wrong".
FLAKY_WAT = """
(module
  (import "hypermesh" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "hypermesh" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "m")
  (data (i32.const 32) "wrong")
  (func (export "hm_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $len)) (i32.const 65536)) (then unreachable))
    (global.set $heap (i32.add (local.get $ptr) (local.get $len)))
    (local.get $ptr))
  (func (export "set_mode") (param $ptr i32) (param $len i32) (result i64)
    (drop (call $kv_set (i32.const 0) (i32.const 1) (local.get $ptr) (i32.const 1)))
    (i64.const 0))
  (func (export "echo") (param $ptr i32) (param $len i32) (result i64)
    (i32.store8 (i32.const 16) (i32.const 0))
    (drop (call $kv_get (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 1)))
    (if (result i64) (i32.eq (i32.load8_u (i32.const 16)) (i32.const 49))
      (then (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 5)))
      (else (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                    (i64.extend_i32_u (local.get $len))))))
  (func (export "health") (param i32 i32) (result i64) (i64.const 0))
)
"""


def write_flaky_capsule(directory):
    (directory / "impl").mkdir(parents=True)
    (directory / "spec" / "api").mkdir(parents=True)
    (directory / "spec" / "README.md").write_text("# tests.flaky\n")
    (directory / "spec" / "api" / "schema.json").write_text("{}\n")
    (directory / "impl" / "code.wasm").write_bytes(bytes(wasmtime.wat2wasm(FLAKY_WAT)))
    (directory / "manifest.json").write_text(json.dumps({
        "format": "hypermesh-capsule/1", "name": "tests.flaky", "version": "1.0.0", "kind": "module",
        "impl": "impl/code.wasm",
        "entry_points": {name: {"io": "bytes"} for name in ("set_mode", "echo", "health")},
        "capabilities": {"requires": ["kv"], "provides": []},
        "trust_zone": "tenant",
        "resources": {"fuel": 1_000_000, "memory_bytes": 1 << 20, "timeout_ms": 1000},
    }))


# Three nodes and some twenty CLI processes: under other suites' load on two cores it took 290 s.
@pytest.mark.timeout(450)
def test_a_provider_caught_returning_wrong_outputs_is_shunned_and_work_goes_to_the_honest_one(tmp_path):
    signer = json.loads(hm("init", "--data-dir", tmp_path / "signer", "--json", cwd=tmp_path).stdout)["peer_id"]
    write_flaky_capsule(tmp_path / "flaky")
    hm("capsule", "sign", "flaky", "--data-dir", tmp_path / "signer", cwd=tmp_path)
    trusting = ["--trust", signer]
    with start_node(tmp_path / "a", extra=trusting) as a, \
            start_node(tmp_path / "c", extra=[*trusting, "--bootstrap", a.addr()]) as c, \
            start_node(tmp_path / "b", extra=[*trusting, "--bootstrap", a.addr()]) as b:
        for node in (b, c):
            hm("dht", "wait", "--peers", "1", "--data-dir", node.data_dir, cwd=tmp_path)
        cid = json.loads(hm("capsule", "publish", "flaky", "--data-dir", a.data_dir, "--json", cwd=tmp_path).stdout)["cid"]
        # C installs the capsule and flips its flag; B installs it so that it can check answers itself.
        hm("capsule", "run", "flaky", "set_mode", "--input", "1", "--data-dir", c.data_dir, cwd=tmp_path)
        assert hm("capsule", "run", "flaky", "echo", "--input", "hi", "--data-dir", b.data_dir,
                  cwd=tmp_path).stdout == "hi\n"

        honest = hm("capsule", "run", "--on", a.addr(), cid, "echo", "--input", "hello", "--verify",
                    "--data-dir", b.data_dir, cwd=tmp_path)
        assert honest.stdout == "hello\n"
        caught = hm("capsule", "run", "--on", c.addr(), cid, "echo", "--input", "hello", "--verify",
                    "--data-dir", b.data_dir, cwd=tmp_path, check=False)
        assert caught.returncode == 1 and caught.stderr.count("\n") == 1
        assert "wrong output" in caught.stderr and "shunned" in caught.stderr

        seen_c = json.loads(hm("trust", "show", c.peer_id, "--json", "--data-dir", b.data_dir, cwd=tmp_path).stdout)
        seen_a = json.loads(hm("trust", "show", a.peer_id, "--json", "--data-dir", b.data_dir, cwd=tmp_path).stdout)
        assert seen_c["shunned"]["reason"].startswith("proven_wrong_output")
        assert seen_c["score"] == 0 and seen_c["components"]["performance"] < 0.05
        assert seen_a["shunned"] is None and seen_a["components"]["performance"] > 0.5

        # Offered both, B sends the work to A; C alone is refused outright.
        for _ in range(5):
            ran = json.loads(hm("capsule", "run", "--on", c.addr(), "--on", a.addr(), cid, "echo", "--input", "x",
                                "--verify", "--json", "--data-dir", b.data_dir, cwd=tmp_path).stdout)
            assert ran["output"] == "x" and ran["receipt"]["node"] == a.peer_id
        refused = hm("capsule", "run", "--on", c.addr(), cid, "echo", "--input", "x", "--data-dir", b.data_dir,
                     cwd=tmp_path, check=False)
        assert refused.returncode == 1 and "shunned" in refused.stderr
