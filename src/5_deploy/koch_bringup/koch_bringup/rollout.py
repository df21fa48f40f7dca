"""Closed-loop evaluation of a checkpoint on the simulated Koch.

    rollout --checkpoint outputs/train/act_sim/checkpoints/last --task reach --episodes 50

Starts the graph `policy.launch.py` starts (koch_bringup.graph.deploy: the MuJoCo Koch, its driver
and cameras, the policy node with the checkpoint, PyTorch or its ONNX export) and runs seeded
episodes on layouts no demonstration used (seeds from 1000 up). Each episode: the arm is sent home,
the sim lays out the next seed's scene once it is there, the policy is enabled for the task's episode
length and the task is judged from the published world ten times a second (koch_sim.tasks.judge, the same rule the
expert is scored by). Nothing in the graph knows it is being evaluated: the tool only calls the
services and reads the topics an operator would.

Writes to --output: rollout.json (every figure below and each episode), videos/episode_<seed>.mp4
(head camera with the commanded tool path, the tool's trail and the verdict), summary.png, and trace/:
the policy node's and the driver's trace logs, from which the report budgets each chunk's way from
the camera's capture to the goal written on the servo bus (koch_common.latency_trace).
Success rate comes with its 95% Wilson interval; inference latency p50/p99 is the policy node's own
(its diagnostics), safety interventions are the driver's and the policy node's counters by kind.
On tasks with a distractor it also says which block the jaws first came down on.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from koch_bringup import graph
from koch_bringup.rollout_media import EpisodeFilm, Take, plot_summary
from koch_bringup.world_probe import FIRST_EVAL_SEED, WorldProbe, running_world
from koch_common.checkpoint_layout import TRAIN_CONFIG_FILE, pretrained_model_dir
from koch_common.latency_trace import budget, read_run
from koch_sim.sim_config import TaskKind, load_sim, task_kind
from koch_sim.tasks import goal_object, success_rule

JUDGE_PERIOD_S = 0.1
REPORT_FILE = "rollout.json"
# Tasks with a distractor: the rollout also reports which block the policy went for.
CHOICE_TASKS = (TaskKind.PICK_COLOR.value, TaskKind.PICK_TALLER.value)


@dataclass
class EpisodeRecord:
    seed: int
    text: str
    success: bool
    time_to_success_s: float | None  # first time the task was judged done while the policy ran
    start_measure: float              # the task's measure before the policy moved (m)
    final_measure: float              # and at the end of the episode (m)
    final_detail: str
    baseline_success: bool            # holding still would have succeeded (the start outcome)
    interventions: dict[str, int]     # safety-layer interventions during the episode, by node.kind
    goal: str = ""                    # the layout's goal object
    chosen: str | None = None         # the first block the jaws came down on (tasks.block_down_on)
    video: str | None = None


@dataclass
class RolloutReport:
    checkpoint: str
    task: str
    success_rule: str
    measure: str
    policy_type: str
    runtime: str                      # onnx | pytorch, as the policy node reports it
    device: str
    first_seed: int
    episodes: list[EpisodeRecord] = field(default_factory=list)
    latency_p50_ms: float = math.nan
    latency_p99_ms: float = math.nan
    chunk_publish_rate_hz: float = math.nan
    training: dict[str, Any] = field(default_factory=dict)  # steps, episodes, wall time, device of the checkpoint
    # Per stage of the live path, capture -> bus write: p50/p99 ms and chunks (koch_common.latency_trace.budget).
    latency_budget: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_s: float = 0.0
    host: str = field(default_factory=lambda: f"{platform.node()} ({os.cpu_count()} cores)")
    utc: str = ""
    command: str = ""

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def success_rate(self) -> float:
        return self.successes / len(self.episodes) if self.episodes else math.nan

    @property
    def success_ci(self) -> tuple[float, float]:
        return wilson_interval(self.successes, len(self.episodes))

    @property
    def choice_counts(self) -> tuple[int, int] | None:
        """(goal chosen, a block chosen at all) over the episodes, on tasks with a distractor; else None."""
        if self.task not in CHOICE_TASKS:
            return None
        return (sum(e.chosen == e.goal for e in self.episodes), sum(e.chosen is not None for e in self.episodes))

    @property
    def interventions(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for episode in self.episodes:
            for kind, count in episode.interventions.items():
                total[kind] = total.get(kind, 0) + count
        return {k: v for k, v in sorted(total.items()) if v}

    def to_dict(self) -> dict[str, Any]:
        low, high = self.success_ci
        return {**asdict(self), "successes": self.successes, "success_rate": self.success_rate,
                "success_ci95": [low, high], "baseline_successes": sum(e.baseline_success for e in self.episodes),
                "goal_chosen": None if self.choice_counts is None else self.choice_counts[0],
                "interventions": self.interventions}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate: sound at 0/n and n/n, unlike the normal approximation."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def training_record(checkpoint: Path) -> dict[str, Any]:
    """How the checkpoint was trained (kuavo_train's record beside its weights); {} when it has none."""
    folder = pretrained_model_dir(checkpoint)
    if folder is None:
        return {}
    saved = json.loads((folder / TRAIN_CONFIG_FILE).read_text(encoding="utf-8"))
    config = saved.get("config", {})
    return {"steps": saved.get("step"), "batch_size": config.get("batch_size"),
            "dataset": config.get("dataset", {}).get("repo_id"),
            "inputs": config.get("policy", {}).get("input_features"), **saved.get("run", {})}


def run_episode(probe: WorldProbe, film: EpisodeFilm | None, duration_s: float) -> tuple[EpisodeRecord, Take | None]:
    """One evaluation episode (and what the film took of it); the policy is disabled again when it returns."""
    probe.send_home(1.0)  # new_episode waits for it: a layout is only placed with the arm clear
    layout = probe.new_episode()
    start = probe.outcome(layout)
    if film is not None:
        film.start()
    probe.enable_policy(True)
    began = time.monotonic()
    first_success: float | None = None
    chosen: str | None = None
    try:
        while (elapsed := time.monotonic() - began) < duration_s:
            if first_success is None and probe.outcome(layout).success:
                first_success = round(elapsed, 2)
            chosen = chosen or probe.block_down_on(layout)
            time.sleep(JUDGE_PERIOD_S)
        final = probe.outcome(layout)
    finally:
        probe.enable_policy(False)
    take = film.stop() if film is not None else None
    record = EpisodeRecord(layout.seed, layout.text, final.success, first_success if final.success else None,
                           start.measure, final.measure, final.detail, start.success, {},
                           goal=goal_object(layout).name, chosen=chosen)
    return record, take


def run_rollout(checkpoint: Path, task: str, episodes: int, output: Path, first_seed: int = FIRST_EVAL_SEED,
                video: bool = True, parameters: dict[str, Any] | None = None,
                log: Callable[[str], None] = functools.partial(print, flush=True),
                port_link: str | None = None) -> RolloutReport:
    """Evaluate `checkpoint` on `episodes` seeded layouts of `task`; write the report, videos and plot to `output`.

    `port_link`: where the simulated follower's serial port is linked (None: sim.yaml's), so that two
    evaluations on one machine do not share a port."""
    kind = task_kind(task)
    parameters = dict(parameters or {})
    output.mkdir(parents=True, exist_ok=True)
    sim = load_sim()
    rule, measure = success_rule(kind, sim)
    report = RolloutReport(str(checkpoint), kind.value, rule, measure, "?", "?",
                           str(parameters.get("device", "cpu")), first_seed, training=training_record(checkpoint),
                           utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                           command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    began = time.monotonic()
    duration = sim.tasks.duration_s(kind)
    # The sim world starts on layout `seed` and each new episode takes the next one.
    trace_dir = output / "trace"  # every chunk's trace points, from both nodes
    shutil.rmtree(trace_dir, ignore_errors=True)
    specs = graph.deploy(str(checkpoint), sim=True, seed=first_seed - 1, task=kind.value, port_link=port_link,
                         trace_dir=str(trace_dir), **parameters)
    with running_world(specs, output / "logs", kind.value) as (running, probe):
        film = EpisodeFilm(probe, sim.camera.fps) if video else None
        probe.enable_policy(False, timeout=120.0)  # loading torch and the checkpoint takes a while on a small CPU
        probe.wait_for_safety_counts_after(time.monotonic())
        counted = probe.safety_counts()
        for index in range(episodes):
            running.check_alive()
            record, take = run_episode(probe, film, duration)
            probe.wait_for_safety_counts_after(time.monotonic())
            now = probe.safety_counts()
            record.interventions = {k: v - counted.get(k, 0) for k, v in now.items() if v != counted.get(k, 0)}
            counted = now
            if film is not None and take is not None:
                written = film.write(take, record, output / "videos" / f"episode_{record.seed:05d}.mp4")
                record.video = str(written.relative_to(output)) if written else None
            report.episodes.append(record)
            log(f"  episode {index + 1:3d}/{episodes}: seed {record.seed}: start {record.start_measure * 100:.1f} cm "
                f"-> {'success' if record.success else 'fail'} ({record.final_detail})"
                + (f", went for {record.chosen or 'no block'}" if kind.value in CHOICE_TASKS else "")
                + (f", safety {record.interventions}" if record.interventions else ""))
        last = probe.diagnostics[-1] if probe.diagnostics else {}
        report.policy_type = last.get("policy_type", "?")
        report.runtime = last.get("runtime", "?")
        report.latency_p50_ms = float(last.get("inference_latency_p50_ms", "nan"))
        report.latency_p99_ms = float(last.get("inference_latency_p99_ms", "nan"))
        rates = [float(d["chunk_publish_rate_hz"]) for d in probe.diagnostics if d.get("enabled") == "True"]
        report.chunk_publish_rate_hz = sorted(rates)[len(rates) // 2] if rates else math.nan
    report.latency_budget = budget(read_run(trace_dir))
    report.wall_s = round(time.monotonic() - began, 1)
    (output / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    plot_summary(report, output / "summary.png")
    return report


def describe(report: RolloutReport) -> str:
    low, high = report.success_ci
    n = len(report.episodes)
    end_to_end = report.latency_budget.get("end_to_end", {})
    end_to_end = end_to_end if end_to_end.get("n") else {}
    lines = [f"{report.policy_type} ({report.runtime}) on {report.task}, {n} unseen layouts from seed "
             f"{report.first_seed} ({report.success_rule}):",
             f"  success      : {report.successes}/{n} = {report.success_rate:.0%}, 95% CI [{low:.0%}, {high:.0%}]",
             f"  hold still   : {sum(e.baseline_success for e in report.episodes)}/{n}",
             *([] if report.choice_counts is None else [
                 f"  chose goal   : {report.choice_counts[0]}/{n} (the first block the jaws came down on; "
                 f"{n - report.choice_counts[1]} came down on none)"]),
             f"  final {report.measure}: mean {sum(e.final_measure for e in report.episodes) / max(n, 1) * 100:.1f} cm",
             f"  inference    : p50 {report.latency_p50_ms:.0f} ms, p99 {report.latency_p99_ms:.0f} ms; chunks "
             f"{report.chunk_publish_rate_hz:.1f} Hz",
             *([] if not end_to_end else [
                 f"  end to end   : camera capture -> goal on the bus p50 {end_to_end['p50_ms']:.0f} ms, "
                 f"p99 {end_to_end['p99_ms']:.0f} ms ({end_to_end['n']} chunks)"]),
             f"  safety       : {report.interventions or 'no interventions'}"]
    return "\n".join(lines)


def parse_parameter(text: str) -> tuple[str, Any]:
    """`name=value` for the policy node (koch_policy.settings.PolicySettings); value parsed as JSON if it can be."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--param {text!r}: write NAME=VALUE, e.g. --param chunk_policy=latest_only")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a kuavo_train checkpoint (pretrained_model, step folder or `last`) or its ONNX export")
    parser.add_argument("--task", default=None, choices=[k.value for k in TaskKind],
                        help="the simulated task (default: sim.yaml's task)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=FIRST_EVAL_SEED,
                        help="the first episode's layout seed (demonstrations use seeds below 1000)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where rollout.json, videos/ and summary.png go (default outputs/rollout/<task>)")
    parser.add_argument("--no-video", action="store_true", help="write no episode videos")
    parser.add_argument("--publish", type=Path, default=None, metavar="JSON",
                        help="also copy the report here, e.g. benchmarks/rollouts/act-reach.json, where "
                        "`python benchmarks/table.py` makes the results table from it")
    parser.add_argument("--param", type=parse_parameter, action="append", default=[], metavar="NAME=VALUE",
                        help="a policy node parameter, e.g. device=cuda or chunk_policy=latest_only (repeatable)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes {args.episodes}: evaluate at least one episode")
    checkpoint = args.checkpoint.expanduser().resolve()
    if not checkpoint.exists():
        parser.error(f"--checkpoint {checkpoint} does not exist; train one (train --config ...) or point at its "
                     "checkpoints/last folder")
    task = task_kind(args.task or load_sim().task).value
    output = (args.output or Path("outputs") / "rollout" / task).resolve()
    report = run_rollout(checkpoint, task, args.episodes, output, args.first_seed, not args.no_video,
                         dict(args.param))
    print(describe(report))
    if args.publish is not None:
        args.publish.parent.mkdir(parents=True, exist_ok=True)
        args.publish.write_text((output / REPORT_FILE).read_text(encoding="utf-8"), encoding="utf-8")
        print(f"published as {args.publish}: run `python benchmarks/table.py` to update the results table")
    print(f"report {output / REPORT_FILE}, plot {output / 'summary.png'}"
          + (f", videos {output / 'videos'}" if not args.no_video else ""))
