"""A first install is quiet: building the package raises no packaging warning,
and the wheel still carries the data files the layers read at run time."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_builds_without_packaging_warnings_and_carries_its_data(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "--wheel-dir",
         str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for warning in ("Package would be ignored", "is absent from the `packages` configuration",
                    "`project.license` as a TOML table is deprecated"):
        assert warning not in output
    (wheel,) = tmp_path.glob("hypermesh-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("hypermesh/capsules/schemas/manifest.schema.json", "hypermesh/capsules/wit/capsule.wit",
                 "hypermesh/capsules/examples/echo/manifest.json", "hypermesh/dht/kad.proto",
                 "hypermesh/node/cli/__init__.py"):
        assert data in names, data
