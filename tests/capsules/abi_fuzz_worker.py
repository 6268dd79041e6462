"""A worker process for the export-signature tests.

Reads one JSON request per line on stdin (``{"wat": ..., "entries": [...]}``),
installs the module as a signed capsule, activates it and calls each entry
point, and answers one JSON line: ``{"outcome": "ok" | "refused" | "error",
"detail": ...}``. It runs in its own process because the defect it guards
against (an unchecked call with the wrong signature) kills the process.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from capsule_testkit import BUILDER, manifest, write_capsule  # noqa: E402
from hypermesh.capsules.errors import CallError, CapsuleError, LinkError  # noqa: E402
from hypermesh.capsules.lifecycle import State  # noqa: E402
from hypermesh.capsules.runtime import CapsuleRuntime  # noqa: E402
from hypermesh.capsules.trust import TrustPolicy  # noqa: E402


def run_case(runtime: CapsuleRuntime, directory: Path, name: str, request: dict) -> dict:
    doc = manifest(name, entries=request["entries"])
    try:
        capsule = runtime.install(write_capsule(directory, doc, request["wat"]))
        if capsule.state == State.QUARANTINED:
            return {"outcome": "refused", "detail": "; ".join(str(d) for d in capsule.diagnostics)}
        runtime.activate(capsule.cid)
        return {"outcome": "ok", "detail": [runtime.call(capsule.cid, entry, b"abc").output.hex() for entry in request["entries"]]}
    except LinkError as exc:
        return {"outcome": "refused", "detail": str(exc)}
    except CallError as exc:
        return {"outcome": "error", "detail": f"{exc.kind}: {exc}"}
    except CapsuleError as exc:
        return {"outcome": "error", "detail": str(exc)}


def main() -> None:
    policy = TrustPolicy()
    policy.trust(BUILDER.peer_id)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = CapsuleRuntime(Path(tmp) / "node", identity=BUILDER, policy=policy)
        try:
            for number, line in enumerate(sys.stdin):
                answer = run_case(runtime, Path(tmp) / str(number), f"fuzz.case{number}", json.loads(line))
                print(json.dumps(answer), flush=True)
        finally:
            runtime.close()


if __name__ == "__main__":
    main()
