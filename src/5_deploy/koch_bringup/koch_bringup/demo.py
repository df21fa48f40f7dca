"""The whole pipeline on the simulated Koch, over real ROS 2:

record scripted-expert demonstrations -> convert to LeRobot v3.0 -> train ACT ->
deploy the policy node in closed loop (`rollout`) and measure success against a hold-still baseline.

Every stage runs the same nodes, parameters and remappings that the launch files start
(koch_bringup.graph); nothing here knows the robot is simulated except the sim's episode
service and scene topic, which lay out and judge the task (koch_sim.tasks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from koch_bringup import graph
from koch_bringup.launcher import find_executable
from koch_bringup.rollout import REPORT_FILE, RolloutReport, describe, run_rollout
from koch_bringup.world_probe import FIRST_EVAL_SEED, TRAIN_SEED, expert_episode, running_world
from koch_common.feature_mapping import DEFAULT_MAPPING, load_mapping
from koch_sim.sim_config import TaskKind, load_sim, task_kind


def record_demonstrations(workdir: Path, episodes: int, task: str) -> list[Path]:
    mapping = load_mapping(DEFAULT_MAPPING)
    topics = dict(mapping.topics)
    if mapping.task_topic:
        topics.setdefault(mapping.task_topic, "std_msgs/msg/String")
    bag_root = workdir / "bags"
    shutil.rmtree(bag_root, ignore_errors=True)
    specs = (graph.sim_robot(TRAIN_SEED, task=task) + graph.scripted_teleop(task=task)
             + graph.recorder(str(bag_root), list(topics), list(topics.values())))
    bags: list[Path] = []
    expert_success = 0
    with running_world(specs, workdir / "logs" / "record", task) as (running, probe):
        for index in range(episodes):
            layout, outcome, bag = expert_episode(probe, running, recording=True)
            bags.append(Path(bag))
            expert_success += outcome.success
            print(f"  demo {index + 1:3d}/{episodes}: seed {layout.seed} {layout.text!r}: {outcome.detail}", flush=True)
    print(f"expert success rate: {expert_success}/{episodes}")
    return bags


def convert(workdir: Path, bags: list[Path], repo_id: str, verbose: bool = False) -> Path:
    """The bags as a LeRobot dataset; ffmpeg's encoder and muxer logs only when `verbose`.

    Episodes the converter refuses (a camera gap on a loaded host, say) are named with the reason."""
    from koch_convert.convert import EpisodeSummary, convert_bags

    output = workdir / "dataset"
    shutil.rmtree(output, ignore_errors=True)
    refused: list[EpisodeSummary] = []
    dataset = convert_bags(bags, load_mapping(DEFAULT_MAPPING), output, repo_id=repo_id, vcodec="h264",
                           progress=True, verbose=verbose,
                           on_episode=lambda s: refused.append(s) if s.refused else None)
    if refused:
        print(f"refused {len(refused)} of the recorded episodes (not in the dataset; reasons in "
              f"{output / 'quality_report.json'}):")
        for summary in refused:
            print(f"  {summary.bag.name}: {summary.refused}")
    return dataset


def describe_dataset(root: Path, repo_id: str) -> None:
    """The dataset as LeRobotDataset reads it: episodes, frames, features and each episode's task text."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset(repo_id, root=root)
    print(f"{root}: {dataset.num_episodes} episodes, {dataset.num_frames} frames at {dataset.fps} fps, "
          f"features {sorted(k for k in dataset.features if k.startswith(('observation', 'action')))}")
    episodes = dataset.meta.episodes  # v3.0's meta/episodes table: one row per episode
    for index, tasks, length in zip(episodes["episode_index"], episodes["tasks"], episodes["length"]):
        print(f"  episode {index}: {length} frames, task {', '.join(map(repr, tasks))}")


def train(workdir: Path, dataset: Path, repo_id: str, overrides: list[str]) -> Path:
    output = workdir / "train"
    shutil.rmtree(output, ignore_errors=True)
    command = [str(find_executable("kuavo_train", "train")), "--config", "train/act_sim.yaml",
               f"dataset.root={dataset}", f"dataset.repo_id={repo_id}", f"output_dir={output}",
               *overrides]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return output / "checkpoints" / "last" / "pretrained_model"


def evaluate(workdir: Path, checkpoint: Path, episodes: int, task: str) -> RolloutReport:
    """`rollout` on the demo's checkpoint: report, episode videos and plot in workdir/rollout."""
    return run_rollout(checkpoint, task, episodes, workdir / "rollout", FIRST_EVAL_SEED)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("demo_output"))
    parser.add_argument("--task", default=None, choices=[k.value for k in TaskKind],
                        help="the simulated task (default: sim.yaml's task, reach)")
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--skip-record", action="store_true", help="reuse the bags in --workdir")
    parser.add_argument("--skip-train", action="store_true", help="reuse the checkpoint in --workdir")
    parser.add_argument("--dataset-only", action="store_true",
                        help="stop after converting: print the dataset's episodes and their task texts")
    parser.add_argument("--verbose", action="store_true",
                        help="also print ffmpeg's encoder statistics and muxer notes while converting")
    parser.add_argument("train_overrides", nargs="*", help="key=value overrides for train/act_sim.yaml")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    task = task_kind(args.task or load_sim().task).value
    repo_id = f"local/koch_sim_{task}"
    timings: dict[str, float] = {}

    started = time.monotonic()
    if args.skip_record or args.skip_train:
        bags = sorted(p for p in (workdir / "bags").iterdir() if (p / "metadata.yaml").is_file())
    else:
        print(f"[1/4] recording {args.train_episodes} scripted-expert demonstrations of {task}", flush=True)
        bags = record_demonstrations(workdir, args.train_episodes, task)
    timings["record_s"] = time.monotonic() - started

    started = time.monotonic()
    if args.skip_train:
        checkpoint = workdir / "train" / "checkpoints" / "last" / "pretrained_model"
    else:
        print(f"[2/4] converting {len(bags)} bags to a LeRobot v3.0 dataset", flush=True)
        dataset = convert(workdir, bags, repo_id, args.verbose)
        timings["convert_s"] = time.monotonic() - started
        if args.dataset_only:
            describe_dataset(dataset, repo_id)
            return
        started = time.monotonic()
        print("[3/4] training ACT on the CPU", flush=True)
        checkpoint = train(workdir, dataset, repo_id, args.train_overrides)
        timings["train_s"] = time.monotonic() - started

    started = time.monotonic()
    print(f"[4/4] closed-loop evaluation on {args.eval_episodes} unseen layouts", flush=True)
    report = evaluate(workdir, checkpoint, args.eval_episodes, task)
    timings["evaluate_s"] = time.monotonic() - started
    summary = {"task": task, "timings_s": timings, "rollout": str(workdir / "rollout" / REPORT_FILE)}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n=== closed-loop result on the simulated Koch: {task} ===")
    print(describe(report))
    print(f"episode videos and summary.png in {workdir / 'rollout'}; timings in {workdir / 'summary.json'}")
    print(f"again, or on another checkpoint: rollout --checkpoint {checkpoint} --task {task} "
          f"--episodes {args.eval_episodes}")
