"""The JavaScript scaffold is built with jco / componentize-js, signed and run (skipped only without Node.js)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JCO_BIN = Path(__file__).resolve().parents[2] / ".js-tools" / "node_modules" / ".bin"


def capsule_cli(*args, cwd, env):
    result = subprocess.run([sys.executable, "-m", "hypermesh.capsules.cli", "capsule", *map(str, args)],
                            cwd=cwd, capture_output=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr.decode()
    return result


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: jco, which builds JS capsules, needs it")
@pytest.mark.timeout(1200)
def test_js_scaffold_builds_signs_and_runs(tmp_path, shared_cache):
    if not (JCO_BIN / "jco").exists():
        pytest.fail("jco is not installed: `make js-setup` installs the pinned jco and componentize-js into .js-tools/")
    env = {**os.environ, "PATH": f"{JCO_BIN}{os.pathsep}{os.environ['PATH']}"}
    # The node directory is kept across runs: compiling the 11 MB component once is enough.
    data = shared_cache / "js-node"
    capsule_cli("new", "acme.jsecho", "--lang", "js", cwd=tmp_path, env=env)
    capsule_cli("build", "jsecho", cwd=tmp_path, env=env)
    capsule_cli("sign", "jsecho", "--data-dir", data, cwd=tmp_path, env=env)
    ran = capsule_cli("run", "jsecho", "handle", "--input", "from javascript", "--data-dir", data, cwd=tmp_path, env=env)
    assert ran.stdout == b"from javascript\n"
