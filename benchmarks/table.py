"""Rewrite benchmarks/README.md from benchmarks/results.jsonl (the latest value of every figure) and
benchmarks/rollouts/*.json (the closed-loop policy results `rollout --publish` writes).

    python benchmarks/table.py            # rewrite benchmarks/README.md
    python benchmarks/table.py --check    # exit 1 when benchmarks/README.md is not what the log gives

Every benchmark run appends one line to results.jsonl (`results_log.record`). The table takes, for
each benchmark and figure, the value of the latest full run (by UTC time, then by order in the log)
that has it, and names the command and the machine of that run. `--quick` runs stay in the log but
not in the table: they are too short to compare with anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results_log import BENCHMARKS, RESULTS, Figure, read_results

README = BENCHMARKS / "README.md"
ROLLOUTS = BENCHMARKS / "rollouts"  # `rollout ... --publish NAME` writes NAME.json here


@dataclass(frozen=True)
class Benchmark:
    name: str  # the `benchmark` field of its runs
    script: str
    what: str


# In pipeline order; the table lists them so.
SUITE = (
    Benchmark("bus", "bench_bus.py",
              "the follower's state read (`DynamixelBus.read_state`) over the real dynamixel-sdk against the servo "
              "emulator with wire timing (6 servos, 1 Mbps, Return_Delay_Time 0), as Fast Sync Read and Sync Read, "
              "against the wire-limited rate computed from the packet sizes"),
    Benchmark("cameras", "bench_cameras.py",
              "three 640×480 @ 30 Hz `camera` processes over DDS, from the sim renderer and from the file source: "
              "capture→publish and capture→receive latency, delivered rate, dropped frames, CPU per process and per "
              "frame against producing the frame without ROS"),
    Benchmark("convert", "bench_convert.py",
              "a 10 s bag with three 640×480 @ 30 Hz cameras converted to LeRobot v3.0 (h264), against encoding the "
              "same frames alone with the same encoder; A B B A cycles, the median cycle's ratio"),
    Benchmark("train", "bench_train.py",
              "kuavo_train (with `dataset.frame_cache=true`) against `lerobot-train` on the same synthetic dataset "
              "and ACT config (20 × 90 frames, 96×128 h264, batch 8, 2 workers, 200 steps on CPU), A B B A"),
    Benchmark("policy", "bench_policy.py",
              "one small ACT: ONNX against PyTorch eager, the policy node's path from observation arrival to the "
              "safe chunk published on DDS, 30 Hz deadline misses over 10,000 ticks, and LeRobot's async "
              "`PolicyServer` over gRPC in a paired run"),
    Benchmark("live", "bench_live.py",
              "the deploy graph on the simulated Koch (MuJoCo, servo emulator, driver, two cameras, policy node "
              "running its ONNX export) in closed loop for 10 minutes: each chunk's way from the camera's capture to "
              "the goal written on the servo bus, per stage, against the same export's forward timed alone in the "
              "same run; missed policy ticks, late driver cycles, and the host's steal time"),
    Benchmark("sim", "bench_sim.py",
              "the MuJoCo Koch: physics step time against its 2 ms timestep, rendering per camera (head, wrist) at "
              "128×96 and 640×480, RGB and depth, against the 30 Hz frame, and the real-time factor the sim world "
              "reports while the full record graph (driver, two RGB-D cameras, expert, teleop, recorder) records "
              "pick_place"),
    Benchmark("fault_soak", "bench_fault_soak.py",
              "30 minutes of random faults (camera killed, frozen or dropping frames, bus unplugged, both cores "
              "saturated, policy node killed and restarted, NaN chunks, e-stop) injected into the simulated graph "
              "while an untrained ACT drives the arm (`koch_bringup.fault_drill`); every goal the servos received "
              "checked offline against koch.yaml's position, velocity and acceleration bounds"),
)


def number(value: float) -> str:
    """Three significant digits, without exponents: 742, 0.83, 1.34, 10,000."""
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.2e}"


def with_unit(value: float, unit: str) -> str:
    if unit == "x":
        return f"{number(value)}×"
    return f"{number(value)} {unit}".strip()


def machine(host: dict[str, Any]) -> str:
    parts = [f"{host['cores']} cores" if host.get("cores") else "cores not recorded",
             host.get("cpu_model") or "CPU model not recorded",
             f"Python {host['python']}" if host.get("python") else "Python version not recorded"]
    details = ", ".join(parts)
    return f"{host['label']} ({details})" if host.get("label") else details


def latest_figures(runs: list[dict[str, Any]]) -> dict[str, list[tuple[Figure, int]]]:
    """benchmark -> [(figure, index of its run in `runs`)]: every figure of the benchmark's latest full
    run, and only those (figures of one run were measured together; older runs stay in the log)."""
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["utc"], i), reverse=True)
    table: dict[str, list[tuple[Figure, int]]] = {}
    for index in order:
        run = runs[index]
        if run.get("quick") or run["benchmark"] in table:
            continue
        table[run["benchmark"]] = [(Figure.from_json(data), index) for data in run["figures"]]
    return table


def read_rollouts(folder: Path) -> list[dict[str, Any]]:
    """The published rollout reports (koch_bringup.rollout's rollout.json), by task then policy."""
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
    return sorted(reports, key=lambda r: (r["task"], r["policy_type"], inputs(r)))


def inputs(report: dict[str, Any]) -> str:
    names = report.get("training", {}).get("inputs") or []
    return ", ".join(n.removeprefix("observation.images.").removeprefix("observation.") for n in names) or "?"


def chose(report: dict[str, Any]) -> str:
    """On tasks with a distractor: how often the policy went for the right block first."""
    chosen = report.get("goal_chosen")
    return "" if chosen is None else f"; went for the goal {chosen}/{len(report['episodes'])}"


def end_to_end(report: dict[str, Any]) -> str:
    """Camera capture to the goal on the bus (the rollout's trace budget); older reports have none."""
    row = report.get("latency_budget", {}).get("end_to_end", {})
    return f"{row['p50_ms']:.0f} / {row['p99_ms']:.0f} ms" if row.get("n") else "not traced"


def rollout_rows(reports: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(table rows, run lines) of the closed-loop results."""
    rows = ["| policy | inputs | task | success [95% CI] | episodes | demonstrations | training | device "
            "| inference p50 / p99 | capture→bus p50 / p99 | runtime | run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    runs = []
    for number_, report in enumerate(reports, 1):
        low, high = report["success_ci95"]
        training = report.get("training", {})
        wall = training.get("train_wall_s")
        trained = f"{training.get('steps', '?')} steps" + (f", {wall / 60:.0f} min" if wall else "")
        rows.append(
            f"| {report['policy_type']} | {inputs(report)} | {report['task']} | {report['successes']}/"
            f"{len(report['episodes'])} = {report['success_rate']:.0%} [{low:.0%}, {high:.0%}]{chose(report)} "
            f"| {len(report['episodes'])} | {training.get('train_episodes', '?')} | {trained} "
            f"| {training.get('device', '?')} | {report['latency_p50_ms']:.0f} / {report['latency_p99_ms']:.0f} ms "
            f"| {end_to_end(report)} | {report['runtime']} | [r{number_}](#rollout-{number_}) |")
        executable, _, arguments = report["command"].partition(" ")
        command = f"{Path(executable).name} {arguments}"  # the installed script's name, not its path
        runs.append(f"{number_}. <a id=\"rollout-{number_}\"></a>`{command}` on {report['host']}, "
                    f"{report['utc'].replace('T', ' ')}; first seed {report['first_seed']}, "
                    f"{report['wall_s'] / 60:.0f} min")
    return rows, runs


def render(runs: list[dict[str, Any]], rollouts: list[dict[str, Any]] | None = None) -> str:
    table = latest_figures(runs)
    known = [b.name for b in SUITE]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise SystemExit(f"results.jsonl names benchmarks {unknown} that table.py does not know; add them to SUITE")
    cited: list[int] = []  # run indices, numbered in order of first use

    def cite(index: int) -> str:
        if index not in cited:
            cited.append(index)
        return f"[{cited.index(index) + 1}](#run-{cited.index(index) + 1})"

    rows = ["| benchmark | figure | value | target | run |", "|---|---|---|---|---|"]
    for bench in SUITE:
        if bench.name not in table:
            rows.append(f"| {bench.name} | no full run recorded yet: `python benchmarks/{bench.script}` | | | |")
            continue
        for figure, index in table[bench.name]:
            target = ""
            if figure.target is not None:
                shown = str(figure.target).replace(">=", "≥").replace("<=", "≤")
                target = f"{shown}: {'met' if figure.target.met(figure.value) else '**missed**'}"
            rows.append(f"| {bench.name} | {figure.name} | {with_unit(figure.value, figure.unit)} | {target} "
                        f"| {cite(index)} |")

    run_lines = []
    for number_, index in enumerate(cited, 1):
        run = runs[index]
        line = (f"{number_}. <a id=\"run-{number_}\"></a>`{run['command']}` on {machine(run['host'])}, "
                f"{run['utc'].replace('T', ' ').replace('Z', ' UTC')}")
        if run.get("source"):
            line += f"; source: {run['source']}"
        run_lines.append(line)

    suite = "\n".join(f"- `{b.script}` ({b.name}): {b.what}." for b in SUITE)
    policy_rows, rollout_runs = rollout_rows(rollouts or [])
    policies = "\n".join(policy_rows) if rollout_runs else "No rollout published yet."
    return f"""# Benchmarks

<!-- Generated by `python benchmarks/table.py` from results.jsonl: edit those, not this file. -->

These scripts measure the pipeline's performance targets on the machine they run on:

{suite}

Run one from the repository root after `bash scripts/setup.sh` and `source scripts/env.sh`, on a
machine with nothing else running (each takes minutes, and `bench_policy.py` about ten; a loaded host
moves every figure):

```bash
KOCH_BENCH_HOST="2-core development VM" python benchmarks/bench_bus.py   # the label names the machine below
python benchmarks/table.py                                               # rewrite this file
```

Each run prints its figures and appends them as one JSON line to `benchmarks/results.jsonl`: the
benchmark, the command line, the UTC time, the host (cores, CPU model, Python, and `KOCH_BENCH_HOST`
when set), and every figure with its unit and, where the benchmark has one, its target.
`python benchmarks/table.py` rewrites this file from that log; `--check` fails when it is out of
date. `--quick` runs are logged but left out of the table. Compare figures only between runs of the
same command on the same kind of machine.

## Current figures

Every figure of each benchmark's latest full run.

{chr(10).join(rows)}

## Runs

{chr(10).join(run_lines) if run_lines else "No runs recorded yet."}

## Closed-loop policies on the simulated Koch

Each row is one `rollout` (koch_bringup.rollout) of a trained checkpoint on unseen seeded layouts,
published with `--publish benchmarks/rollouts/<name>.json`: success with its 95% Wilson
interval, the demonstrations and training of the checkpoint (from its training record), and the
policy node's own inference latency while it drove the arm. The training configs are under
`config/train/`.

{policies}

{chr(10).join(rollout_runs)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results log (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=README, help="the page to write (default: %(default)s)")
    parser.add_argument("--rollouts", type=Path, default=ROLLOUTS,
                        help="the published rollout reports (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when --output is out of date")
    args = parser.parse_args(argv)
    text = render(read_results(args.results), read_rollouts(args.rollouts))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `python benchmarks/table.py`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
