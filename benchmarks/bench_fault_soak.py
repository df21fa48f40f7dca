"""Fault soak: random faults injected into the live simulated graph while a policy drives the arm.

    python benchmarks/bench_fault_soak.py [--duration-s 1800] [--seed 0] [--checkpoint PATH] [--quick]

Runs `koch_bringup.fault_drill` (see its docstring for the faults and the measurements) for
`--duration-s` seconds of random faults, drawn from every kind, 0.5-3 s each (a frame drop 1-5
frame periods), with 0.5-2 s of undisturbed control between them; the policy is an untrained ACT
unless `--checkpoint` is given (arbitrary actions: the harshest input for the limits). Then every
goal the emulated servos received is checked against koch.yaml's position, velocity and acceleration
bounds. Targets: goals outside any bound 0, node or driver crashes 0, every holding fault held and
every fault followed by motion again. `--quick`: 120 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from results_log import Comparison, Figure, Target, record

from koch_bringup.fault_drill import FaultKind, run_drill


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--out", type=Path, help="keep the goal log, node logs and report here (default: temporary)")
    parser.add_argument("--quick", action="store_true", help="120 s of faults")
    args = parser.parse_args()
    duration = 120.0 if args.quick else args.duration_s
    with tempfile.TemporaryDirectory(prefix="fault_soak_") as tmp:
        out = args.out or Path(tmp)
        report = run_drill(out, list(FaultKind), duration, args.seed, args.checkpoint)
    for line in report.lines():
        print(line)
    zero = Target(Comparison.AT_MOST, 0)
    goals = report.goals
    assert goals is not None
    figures = [
        Figure("faults injected", len(report.events), ""),
        *[Figure(f"faults: {kind}", count, "") for kind, count in report.by_kind().items()],
        Figure("goals received", goals.goals, ""),
        Figure("goals outside any bound", goals.outside_any_bound, "", zero),
        Figure("fault -> hold p99", report.percentile(report.hold_ticks, 99), "ticks"),
        Figure("recovery -> motion p99", report.percentile(report.motion_s, 99), "s"),
        Figure("holding faults without a hold", len(report.missing_holds), "", zero),
        Figure("faults without motion again", len(report.not_resumed), "", zero),
        Figure("longest policy silence", report.longest_silence_s * 1e3, "ms"),
        Figure("node or driver crashes", len(report.crashes), "", zero),
    ]
    record("fault_soak", figures, quick=args.quick)
    failed = goals.outside_any_bound or report.crashes or report.missing_holds or report.not_resumed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
