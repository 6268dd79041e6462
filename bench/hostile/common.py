"""Shared by the hostile-peer reproductions: the node under test and the report.

Each script attacks one `hypermesh run` node, either one already running
(``--maddr``, started with ``--perf`` where the script needs perf) or one it
starts itself, and prints ONE JSON object; exit status 1 if the node failed
the check the script names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hypermesh.node.processes import run_cli, start_node  # noqa: E402

MIB = 1 << 20


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--maddr", help="a running node (default: start `hypermesh run --perf` here)")
    parser.add_argument("--pid", type=int, help="its process ID, to report its memory")
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test")
    return parser.parse_args()


@contextlib.contextmanager
def target_node(args: argparse.Namespace):
    """``(multiaddr, pid or None)`` of the node under test."""
    if args.maddr:
        yield args.maddr, args.pid
        return
    with tempfile.TemporaryDirectory(prefix="hypermesh-hostile-") as tmp:
        with start_node(Path(tmp) / "target", extra=["--perf"]) as node:
            yield node.addr(), node.process.pid


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process, from /proc (None where unknown)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def ping_from_another_process(addr: str) -> list[float]:
    """Round trips (ms) of `hypermesh ping` run as its own process: a peer the
    attacking process's own load cannot slow down. Empty if it failed or
    did not finish within run_cli's timeout (a failed ping, not a failed run)."""

    def run() -> list[float]:
        with tempfile.TemporaryDirectory(prefix="hypermesh-bystander-") as tmp:
            try:
                completed = run_cli("ping", addr, "--count", "3", "--json", "--data-dir", tmp)
            except subprocess.TimeoutExpired:
                return []
        return json.loads(completed.stdout)["rtts_ms"] if completed.returncode == 0 else []

    return await trio.to_thread.run_sync(run)


def report(result: dict, passed: bool) -> int:
    result["passed"] = passed
    print(json.dumps(result))
    return 0 if passed else 1
