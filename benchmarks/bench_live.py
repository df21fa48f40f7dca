"""Live-graph latency budget: the deploy graph on the simulated Koch, camera capture to the goal on the bus.

    python benchmarks/bench_live.py [--checkpoint RUN/checkpoints/last] [--minutes 10] [--task reach] [--quick]

Starts the graph `policy.launch.py` starts (koch_bringup.graph.deploy: MuJoCo Koch behind the servo
emulator, the follower driver on its pty, head and wrist cameras, the policy node) with `trace_dir`
set, and runs the policy in closed loop for --minutes: episodes of the task back to back, as
`rollout` runs them (the arm sent home, a new layout, the policy enabled for the episode's length).
Every chunk's trace points (koch_common.latency_trace) are joined afterwards and budgeted per stage:
capture -> arrival, arrival -> inference start, inference, chunk -> published, published -> driver,
driver -> bus write, and end to end.

In the same run, before the graph starts, the same export's bare forward is timed alone (the
deployed ONNX graph on a real-shaped observation, with the node's thread settings), so the live
inference is printed as a ratio to it. Also printed: the policy node's missed 30 Hz ticks, the
driver's late control cycles (both from their /diagnostics), and the host's steal time over the run.

Without --checkpoint a small ACT is built as `bench_policy.py` builds it (96x128 head camera, fitted
to smooth chunks) and exported as training exports; pass a trained one (the demo's
`demo_output/checkpoints/last`) to measure that model.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_policy import build_checkpoint, stolen_cpu_ticks, timed
from results_log import Comparison, Figure, Target, record

from koch_bringup import graph
from koch_bringup.rollout import run_episode
from koch_bringup.ros_session import wait_for
from koch_bringup.world_probe import FIRST_EVAL_SEED, WorldProbe, running_world
from koch_common.latency_trace import budget, format_budget, percentiles_ms, read_run
from koch_sim.sim_config import load_sim, task_kind

LIVE_INFERENCE_RATIO = 2.0  # live inference p99 / bare forward p99, at most
END_TO_END_MARGIN_MS = 25.0  # end to end p99 - live inference p99, at most


def bare_forward_ms(checkpoint: Path, threads: int, n: int) -> tuple[float, float]:
    """p50/p99 of the runtime the node loads (its export), predict_chunk on a real-shaped observation."""
    from koch_runtime.factory import load_runtime

    runtime = load_runtime(checkpoint, "cpu", threads)
    rng = np.random.default_rng(0)
    observation = {}
    for key, spec in runtime.feature_specs.items():
        if key.startswith("observation.images."):
            observation[key] = rng.integers(0, 255, spec["shape"], dtype=np.uint8)
        elif key.startswith("observation."):
            observation[key] = rng.uniform(-0.5, 0.5, spec["shape"]).astype(np.float32)
    caller = getattr(runtime, "caller_cpus", None)
    if caller:  # where the node's inference worker runs it
        os.sched_setaffinity(0, caller)
    try:
        seconds = timed(lambda: runtime.predict_chunk(observation), n, warmup=10)
    finally:
        if caller:
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
    print(f"bare forward alone ({type(runtime).__name__}, {n} runs): p50 {np.percentile(seconds, 50) * 1e3:.2f} ms, "
          f"p99 {np.percentile(seconds, 99) * 1e3:.2f} ms")
    return percentiles_ms(seconds)


def driver_status(probe: WorldProbe) -> dict[str, str]:
    return next(r.values for r in probe.statuses.values() if "late_cycles" in r.values)


def loop_counts(probe: WorldProbe) -> tuple[int, int]:
    """(the policy node's missed ticks, the driver's late cycles) so far, from their latest diagnostics."""
    return int(probe.diagnostics[-1]["missed_ticks"]), int(driver_status(probe)["late_cycles"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint with its ONNX export (training writes one); default: build a small ACT")
    parser.add_argument("--minutes", type=float, default=10.0, help="closed-loop time (default 10)")
    parser.add_argument("--task", default="reach", help="the simulated task the policy runs (default reach)")
    parser.add_argument("--quick", action="store_true", help="1 minute, 100 bare forwards (not in the table)")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_live"),
                        help="where the traces and the graph's logs go")
    args = parser.parse_args()
    minutes = 1.0 if args.quick else args.minutes
    kind = task_kind(args.task)
    duration = load_sim().tasks.duration_s(kind)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            from kuavo_train.export import export_after_training

            checkpoint = build_checkpoint(Path(tmp), fit_steps=100)
            export_after_training(checkpoint, "act")
        checkpoint = checkpoint.expanduser().resolve()
        bare_p50, bare_p99 = bare_forward_ms(checkpoint, 0, 100 if args.quick else 500)

        output = args.output.resolve()
        trace_dir = output / "trace"
        for stale in trace_dir.glob("*.jsonl"):
            stale.unlink()
        specs = graph.deploy(str(checkpoint), sim=True, seed=FIRST_EVAL_SEED - 1, task=kind.value,
                             trace_dir=str(trace_dir))
        episodes = 0
        with running_world(specs, output / "logs", kind.value) as (running, probe):
            probe.enable_policy(False, timeout=120.0)
            wait_for(lambda: probe.diagnostics and any("late_cycles" in r.values for r in probe.statuses.values()),
                     30.0, "diagnostics from the policy node and the driver")
            probe.wait_for_safety_counts_after(time.monotonic())  # counts from here on: start-up is not measured
            missed_before, late_before = loop_counts(probe)
            stolen_before, began = stolen_cpu_ticks(), time.monotonic()
            while time.monotonic() - began < minutes * 60:
                running.check_alive()
                run_episode(probe, None, duration)
                episodes += 1
                print(f"  episode {episodes}: {time.monotonic() - began:.0f} s", flush=True)
            wall = time.monotonic() - began
            stolen_s = (stolen_cpu_ticks() - stolen_before) / os.sysconf("SC_CLK_TCK")
            probe.wait_for_safety_counts_after(time.monotonic())
            missed, late = (after - before for after, before in zip(loop_counts(probe), (missed_before, late_before)))
            policy = probe.diagnostics[-1]
            driver = driver_status(probe)

    table = budget(read_run(trace_dir))
    print(f"\n{episodes} episodes of {kind.value} in {wall:.0f} s; runtime {policy['runtime']} "
          f"({policy['runtime_path']}); host steal time {stolen_s:.1f} s "
          f"({100 * stolen_s / (wall * (os.cpu_count() or 1)):.1f}% of the CPUs' time)")
    print("\n".join(format_budget(table)))
    live_p99, end_p99 = table["inference"]["p99_ms"], table["end_to_end"]["p99_ms"]
    ratio = live_p99 / bare_p99
    margin = end_p99 - live_p99
    print(f"live inference p99 / bare forward p99: {ratio:.2f}x (target <= {LIVE_INFERENCE_RATIO:g}x)")
    print(f"end to end p99 - inference p99: {margin:.1f} ms (target <= {END_TO_END_MARGIN_MS:g} ms)")
    print(f"policy node missed ticks: {missed} (worst tick interval {policy['tick_interval_max_ms']} ms); "
          f"driver late cycles: {late} (worst cycle interval {driver['cycle_interval_max_ms']} ms); target 0")
    if not math.isfinite(end_p99):
        sys.exit("no chunk was traced to the bus: see the graph's logs in " + str(output / "logs"))
    figures = [Figure(f"{name} p{q}", row[f"p{q}_ms"], "ms") for name, row in table.items() for q in (50, 99)]
    figures += [
        Figure("bare forward p50", bare_p50, "ms"), Figure("bare forward p99", bare_p99, "ms"),
        Figure("live inference p99 / bare forward p99", ratio, "x",
               Target(Comparison.AT_MOST, LIVE_INFERENCE_RATIO)),
        Figure("end to end p99 - inference p99", margin, "ms", Target(Comparison.AT_MOST, END_TO_END_MARGIN_MS)),
        Figure("policy node missed ticks", missed, "", Target(Comparison.AT_MOST, 0)),
        Figure("driver late cycles", late, "", Target(Comparison.AT_MOST, 0)),
        Figure("chunks traced to the bus", table["end_to_end"]["n"], ""),
        Figure("closed-loop time", wall, "s"),
        Figure("host steal time", stolen_s, "s"),
    ]
    record("live", figures, quick=args.quick)


if __name__ == "__main__":
    main()
