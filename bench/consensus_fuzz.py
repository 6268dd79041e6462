"""Consensus fuzz: seeded adversarial schedules on the simulator, safety and liveness checked on each.

Seed s runs n = 4, 7 or 10 validators (s mod 3), as much Byzantine power as
stays below a third (each Byzantine validator silent, forging, replaying,
withholding, double-voting, equivocating as proposer or proposing invalid
blocks), loss, delay, duplication and flapping links before GST, partitions
that heal and validators killed and restarted; in half of them the nodes run
the ledger and clients contend for locks, whose history must be
linearizable; in one in five some or all validators sign with ML-DSA-65 (consensus/fuzz.py says what is checked and how liveness is
bounded). One process, one core.

    python bench/consensus_fuzz.py [--quick] [--schedules N] [--first-seed S]
    python bench/consensus_fuzz.py --seed S    # replay one schedule: prints it step by step, exit 1 if it fails
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import check, machine, summary  # noqa: E402

from hypermesh.consensus.fuzz import N_CHOICES, generate_schedule, replay, run_schedule  # noqa: E402

FULL_SCHEDULES = 2_001  # 667 per n
QUICK_SCHEDULES = 60
PROGRESS_EVERY = 30
# 2,000 schedules within ten minutes of one core.
RATE_TARGET = 2_000 / 600


def fuzz(first_seed: int, count: int) -> dict:
    per_n = defaultdict(lambda: {"schedules": 0, "violations": 0, "liveness_misses": 0, "cpu_s": 0.0,
                                 "resume_ms": [], "resume_share_of_bound": 0.0, "failing_seeds": [],
                                 "lock_schedules": 0, "lock_requests": 0, "ml_dsa_schedules": 0})
    for seed in range(first_seed, first_seed + count):
        schedule = generate_schedule(seed)
        started = time.process_time()
        outcome = run_schedule(schedule)
        row = per_n[schedule.n]
        row["cpu_s"] += time.process_time() - started
        row["schedules"] += 1
        row["violations"] += len(outcome.violations)
        row["liveness_misses"] += outcome.liveness_miss is not None
        row["ml_dsa_schedules"] += bool(schedule.ml_dsa)
        if outcome.locks is not None:
            row["lock_schedules"] += 1
            row["lock_requests"] += len(outcome.locks.history())
        if outcome.resume_after is not None:
            row["resume_ms"].append(outcome.resume_after * 1000)
            row["resume_share_of_bound"] = max(row["resume_share_of_bound"],
                                               outcome.resume_after / outcome.resume_bound)
        if not outcome.ok:
            row["failing_seeds"].append(seed)
        if (seed - first_seed + 1) % PROGRESS_EVERY == 0:
            # On stderr, so that a run stopped early still tells what it checked.
            print(json.dumps({"progress": seed - first_seed + 1, "last_seed": seed,
                              **{f"n{n}": {k: row[k] for k in ("schedules", "violations", "liveness_misses",
                                                               "lock_schedules", "ml_dsa_schedules", "cpu_s")}
                                 for n, row in sorted(per_n.items())}}), file=sys.stderr, flush=True)
    return per_n


def report(per_n: dict, quick: bool, first_seed: int, wall_s: float) -> dict:
    checks, details = [], {}
    for n in N_CHOICES:
        row = per_n[n]
        rate = row["schedules"] / row["cpu_s"] if row["cpu_s"] else 0.0
        target = QUICK_SCHEDULES // 3 if quick else FULL_SCHEDULES // 3
        checks += [
            check(f"schedules_n{n}", row["schedules"], "schedules", f">= {target}", met=row["schedules"] >= target),
            check(f"safety_violations_n{n}", row["violations"], "violations", 0, met=row["violations"] == 0),
            check(f"liveness_misses_n{n}", row["liveness_misses"], "schedules", 0, met=row["liveness_misses"] == 0),
            check(f"lock_histories_checked_n{n}", row["lock_schedules"], "schedules (none failed: see violations)",
                  None, met=row["lock_schedules"] > 0),
            check(f"ml_dsa_schedules_n{n}", row["ml_dsa_schedules"],
                  "schedules with ML-DSA-65 signers (none failed: see violations)", None,
                  met=row["ml_dsa_schedules"] > 0),
            check(f"schedules_per_cpu_s_n{n}", round(rate, 2), "schedules/s (one core)", None, met=True),
        ]
        details[f"n{n}"] = {
            "resume_after_stable_ms": summary(row["resume_ms"]),
            "largest_resume_share_of_bound": round(row["resume_share_of_bound"], 3),
            "cpu_s": round(row["cpu_s"], 1),
            "lock_requests_checked": row["lock_requests"],
            "failing_seeds": row["failing_seeds"][:20],
        }
    total = sum(per_n[n]["schedules"] for n in N_CHOICES)
    cpu = sum(per_n[n]["cpu_s"] for n in N_CHOICES)
    checks.append(check("schedules_per_cpu_s", round(total / cpu, 2) if cpu else 0.0, "schedules/s (one core)",
                        f">= {RATE_TARGET:.2f}", met=cpu > 0 and total / cpu >= RATE_TARGET))
    failing = [seed for n in N_CHOICES for seed in per_n[n]["failing_seeds"]]
    return {
        "bench": "consensus_fuzz",
        "quick": quick,
        "setting": {"schedules": total, "first_seed": first_seed, "n": list(N_CHOICES),
                    "replay": "python bench/consensus_fuzz.py --seed S"},
        "machine": machine(),
        "seconds": round(wall_s, 1),
        "cpu_seconds": round(cpu, 1),
        "checks": checks,
        "per_n": details,
        "failing_seeds": failing[:20],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SCHEDULES} schedules, a smoke run")
    parser.add_argument("--schedules", type=int, help=f"how many (default {FULL_SCHEDULES})")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, help="replay this one schedule and print it step by step")
    args = parser.parse_args()
    if args.seed is not None:
        outcome = replay(args.seed)
        print(outcome.describe())
        print(json.dumps({"bench": "consensus_fuzz", "seed": args.seed, "ok": outcome.ok,
                          "violations": outcome.violations, "liveness_miss": outcome.liveness_miss}))
        return 0 if outcome.ok else 1
    count = args.schedules or (QUICK_SCHEDULES if args.quick else FULL_SCHEDULES)
    started = time.perf_counter()
    per_n = fuzz(args.first_seed, count)
    print(json.dumps(report(per_n, args.quick, args.first_seed, time.perf_counter() - started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
