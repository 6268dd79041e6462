"""What every bench shares: latency summaries, the `checks` rows, baseline
subprocesses and a description of the machine."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INTEROP_PY = os.environ.get("HYPERMESH_INTEROP_PY", str(REPO / ".venv-interop" / "bin" / "python"))


def summary(values_ms: list[float]) -> dict | None:
    """n, p50, p99, mean, min, max of latencies in milliseconds."""
    ms = sorted(values_ms)
    if not ms:
        return None
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 4),
        "p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 4),
        "mean": round(statistics.fmean(ms), 4),
        "min": round(ms[0], 4),
        "max": round(ms[-1], 4),
    }


def check(name, value, unit, target, baseline=None, ratio=None, met=None) -> dict:
    """One row of a bench's ``checks`` list."""
    return {"name": name, "value": value, "unit": unit, "target": target, "baseline": baseline,
            "ratio": None if ratio is None else round(ratio, 2), "met": bool(met)}


def get(tree, *path):
    """``tree[path[0]][path[1]]…``, or None where any step is missing."""
    for key in path:
        if not isinstance(tree, dict) or tree.get(key) is None:
            return None
        tree = tree[key]
    return tree


def run_json(command: list[str], timeout: float) -> dict:
    """Run a baseline script and parse the JSON object it prints last.

    A script that prints none (it crashed, or was killed) gives
    ``{"error": …}`` with its exit status and the end of its stderr: the
    cause, not a parsing failure of ours.
    """
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return {"error": f"no answer within {timeout:.0f} s: {_tail(exc.stderr)}"}
    lines = result.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        printed = f"printed {lines[-1][:200]!r}" if lines else "printed nothing"
        return {"error": f"exit status {result.returncode}, {printed}; stderr: {_tail(result.stderr)}"}


def _tail(stderr: str | bytes | None, limit: int = 600) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return (stderr or "").strip()[-limit:] or "(empty)"


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
