"""Helpers shared by the capsule tests: write, sign and load small capsules."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import wasmtime

from hypermesh.capsules.receipt import sign_capsule
from hypermesh.transport.identity import Identity

# How late past its timeout every deadline-stopped call may return. The epoch
# ticker and the calling thread each have to be scheduled; on the 2-core
# machine shared by ~10 runnable processes (load average 10) 400 calls
# overshot by p50 4-6 ms, p99 24-134 ms, max 141 ms. A missing deadline would
# instead run until the test's 10^11 fuel (tens of seconds).
DEADLINE_SLACK_MS = 250

BUILDER = Identity.from_seed(b"capsule-tests-builder")
STRANGER = Identity.from_seed(b"capsule-tests-stranger")

# The core-module ABI's allocator, for test modules: a bump pointer from offset 1024.
ALLOC_WAT = """
  (global $heap (mut i32) (i32.const 1024))
  (func (export "hm_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $len)))
    (local.get $ptr))"""

# A core module with the bytes ABI whose entry points exercise the limits.
LIMITS_WAT = """
(module
  (memory (export "memory") 1)""" + ALLOC_WAT + """
  (func (export "echo") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "spin") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0))
  ;; grows memory one page at a time until memory.grow fails; returns
  ;; "<pages held>,<result of the failing grow>" as decimal text at offset 0
  (func (export "hog") (param i32 i32) (result i64)
    (local $result i32)
    (block $done
      (loop $more
        (local.set $result (memory.grow (i32.const 1)))
        (br_if $done (i32.eq (local.get $result) (i32.const -1)))
        (br $more)))
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (memory.size) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 1) (i32.add (i32.const 48) (i32.rem_u (memory.size) (i32.const 10))))
    (i32.store8 (i32.const 2) (i32.const 44))
    (i32.store8 (i32.const 3) (i32.const 45))
    (i32.store8 (i32.const 4) (i32.const 49))
    (i64.const 5))
  (func (export "boom") (param i32 i32) (result i64)
    unreachable)
  (func (export "health") (param i32 i32) (result i64)
    (i64.const 0))
)
"""


def manifest(name: str = "tests.limits", version: str = "1.0.0", *, kind: str = "module", impl: str = "impl/code.wasm",
             entries=("echo", "spin", "hog", "boom", "health"), requires=(), zone: str = "tenant",
             fuel: int = 10_000_000, memory: int = 1 << 20, timeout_ms: int = 1000, **extra) -> dict:
    document = {
        "format": "hypermesh-capsule/1",
        "name": name,
        "version": version,
        "kind": kind,
        "impl": impl,
        "entry_points": {entry: {"io": "bytes"} for entry in entries},
        "capabilities": {"requires": list(requires), "provides": []},
        "trust_zone": zone,
        "resources": {"fuel": fuel, "memory_bytes": memory, "timeout_ms": timeout_ms},
    }
    document.update(extra)
    return document


def write_capsule(directory: Path, manifest_doc: dict, code: bytes | str, *, spec: dict[str, bytes] | None = None,
                  signer: Identity | None = BUILDER) -> Path:
    """Lay out a capsule (WAT text is compiled) and sign it unless ``signer`` is None."""
    directory = Path(directory)
    (directory / "impl").mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps(manifest_doc, indent=2))
    wasm = wasmtime.wat2wasm(code) if isinstance(code, str) else code
    (directory / manifest_doc["impl"]).write_bytes(bytes(wasm))
    for path, data in (spec or {"spec/README.md": b"# spec\n", "spec/api/schema.json": b"{}\n"}).items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(data)
    if signer is not None:
        sign_capsule(directory, signer)
    return directory


def copy_example(name: str, target: Path) -> Path:
    source = resources.files("hypermesh.capsules").joinpath("examples", name)
    destination = Path(target) / name
    shutil.copytree(str(source), destination, ignore=shutil.ignore_patterns("impl", "receipt.json", "wit", "__pycache__"))
    return destination
