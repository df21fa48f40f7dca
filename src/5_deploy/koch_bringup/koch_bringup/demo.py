"""The whole pipeline on the simulated Koch, over real ROS 2:

record scripted-expert demonstrations -> convert to LeRobot v3.0 -> train ACT ->
deploy the policy node in closed loop and measure success against a hold-still baseline.

Every stage runs the same nodes, parameters and remappings that the launch files start
(koch_bringup.graph); nothing here knows the robot is simulated except the target service.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from koch_bringup import graph
from koch_bringup.launcher import GraphProcess, find_executable
from koch_bringup.ros_session import RosSession, wait_for
from koch_common.feature_mapping import DEFAULT_MAPPING, load_mapping
from koch_common.robot import load_koch
from koch_common.topics import topic
from koch_sim.sim_config import load_sim
from koch_sim.task import tcp_distance

TRAIN_SEED = 0
EVAL_SEED = 1000  # a different target stream: evaluation targets were never demonstrated
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class EpisodeResult:
    target: list[float]
    start_distance: float
    final_distance: float


class WorldProbe:
    """The orchestrator's view of the running graph: joint states, target, diagnostics."""

    def __init__(self, session: RosSession) -> None:
        self.session = session
        self.node = session.node("koch_demo")
        koch = load_koch()
        self.names = koch.follower.names
        self.kinematics = koch.kinematics
        self.joints: np.ndarray | None = None
        self.target: np.ndarray | None = None
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(JointState, topic("follower_joint_states"), self._on_joints, 10)
        self.node.create_subscription(PointStamped, topic("sim_target"), self._on_target, LATCHED)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.command_pub = self.node.create_publisher(JointTrajectory, topic("follower_joint_commands"), 10)

    def _on_joints(self, msg: JointState) -> None:
        by_name = dict(zip(msg.name, msg.position))
        self.joints = np.array([by_name[n] for n in self.names])

    def tcp_distance(self, target: np.ndarray) -> float:
        """The follower's tcp distance to `target` now (m), from its latest joint state."""
        if self.joints is None:
            raise RuntimeError("no follower joint state received yet: is the follower driver running?")
        return tcp_distance(self.joints, target, self.kinematics)

    def _on_target(self, msg: PointStamped) -> None:
        self.target = np.array([msg.point.x, msg.point.y, msg.point.z])

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id == "policy":
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def trigger(self, service: str) -> str:
        response = self.session.call(self.node, Trigger, service, Trigger.Request())
        if not response.success:
            raise RuntimeError(f"{service} failed: {response.message}")
        return response.message

    def enable_policy(self, enabled: bool, timeout: float = 10.0) -> None:
        request = SetBool.Request(data=enabled)
        if not self.session.call(self.node, SetBool, "/policy/policy/enable", request, timeout).success:
            raise RuntimeError(f"the policy node refused enable={enabled}")

    def new_target(self) -> np.ndarray:
        message = self.trigger("/sim/sim_world/new_episode")
        target = np.array([float(v) for v in message.split()])
        wait_for(lambda: self.target is not None and np.allclose(self.target, target, atol=1e-4), 5.0, "target")
        return target

    def send_home(self, duration: float) -> None:
        """An operator's reset: a two-point trajectory to the home pose, straight to the driver."""
        msg = JointTrajectory()
        msg.joint_names = self.names
        sec = int(duration)
        msg.points = [JointTrajectoryPoint(positions=[0.0] * len(self.names))]
        msg.points[0].time_from_start.sec = sec
        msg.points[0].time_from_start.nanosec = int((duration - sec) * 1e9)
        self.command_pub.publish(msg)


@contextmanager
def running_world(specs: list[graph.NodeSpec], log_dir: Path) -> Iterator[tuple[GraphProcess, WorldProbe]]:
    """Start `specs` as processes and a probe on them; wait until the follower reports state."""
    with GraphProcess(specs, log_dir) as running:
        session = RosSession()
        try:
            probe = WorldProbe(session)
            wait_for(lambda: probe.joints is not None, 30.0, "follower joint states")
            yield running, probe
        finally:
            session.close()


def record_demonstrations(workdir: Path, episodes: int) -> list[Path]:
    sim = load_sim()
    mapping = load_mapping(DEFAULT_MAPPING)
    topics, types = list(mapping.topics), list(mapping.topics.values())
    bag_root = workdir / "bags"
    shutil.rmtree(bag_root, ignore_errors=True)
    specs = graph.sim_robot(TRAIN_SEED) + graph.scripted_teleop() + graph.recorder(str(bag_root), topics, types)
    bags: list[Path] = []
    expert_success = 0
    with running_world(specs, workdir / "logs" / "record") as (running, probe):
        for index in range(episodes):
            running.check_alive()
            target = probe.new_target()
            probe.trigger("/leader/scripted_leader/go_home")
            time.sleep(1.3)
            probe.trigger("/recorder/start")
            probe.trigger("/leader/scripted_leader/reach")
            time.sleep(sim.task.episode_duration_s)
            message = probe.trigger("/recorder/stop")
            bags.append(Path(message.split()[0]))
            distance = probe.tcp_distance(target)
            expert_success += distance <= sim.task.success_distance
            print(f"  demo {index + 1:3d}/{episodes}: target {np.round(target, 3).tolist()}, "
                  f"final distance {distance * 100:.1f} cm", flush=True)
    print(f"expert success rate: {expert_success}/{episodes}")
    return bags


def convert(workdir: Path, bags: list[Path], verbose: bool = False) -> Path:
    """The bags as a LeRobot dataset; ffmpeg's encoder and muxer logs only when `verbose`."""
    from koch_convert.convert import convert_bags

    output = workdir / "dataset"
    shutil.rmtree(output, ignore_errors=True)
    return convert_bags(bags, load_mapping(DEFAULT_MAPPING), output, repo_id="local/koch_sim_reach",
                        vcodec="h264", progress=True, verbose=verbose)


def train(workdir: Path, dataset: Path, overrides: list[str]) -> Path:
    output = workdir / "train"
    shutil.rmtree(output, ignore_errors=True)
    command = [str(find_executable("kuavo_train", "train")), "--config", "train/act_sim.yaml",
               f"dataset.root={dataset}", "dataset.repo_id=local/koch_sim_reach", f"output_dir={output}",
               *overrides]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return output / "checkpoints" / "last" / "pretrained_model"


def evaluate(workdir: Path, checkpoint: Path, episodes: int) -> tuple[list[EpisodeResult], dict[str, float]]:
    sim = load_sim()
    results: list[EpisodeResult] = []
    specs = graph.deploy(str(checkpoint), sim=True, seed=EVAL_SEED)
    with running_world(specs, workdir / "logs" / "deploy") as (running, probe):
        # Loading torch, LeRobot and the checkpoint takes a while on a small CPU.
        probe.enable_policy(False, timeout=120.0)
        for index in range(episodes):
            running.check_alive()
            probe.enable_policy(False)
            target = probe.new_target()
            probe.send_home(1.0)
            time.sleep(1.4)
            # The hold-still baseline ends where it starts: its final distance is this one.
            start = probe.tcp_distance(target)
            probe.enable_policy(True)
            time.sleep(sim.task.episode_duration_s)
            final = probe.tcp_distance(target)
            results.append(EpisodeResult(target.round(4).tolist(), start, final))
            print(f"  eval {index + 1:3d}/{episodes}: start {start * 100:5.1f} cm -> "
                  f"policy {final * 100:5.1f} cm", flush=True)
        probe.enable_policy(False)
        time.sleep(1.2)  # one more diagnostics message with the full latency history
        stats = {}
        if probe.diagnostics:
            last = probe.diagnostics[-1]
            # Median over every second the policy was enabled, in all episodes.
            rates = [float(d["chunk_publish_rate_hz"]) for d in probe.diagnostics[:-1]
                     if d["enabled"] == "True"]
            stats = {
                "chunk_publish_rate_hz": float(np.median(rates)) if rates else float("nan"),
                "inference_latency_p50_ms": float(last["inference_latency_p50_ms"]),
                "inference_latency_p99_ms": float(last["inference_latency_p99_ms"]),
            }
    return results, stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("demo_output"))
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--skip-record", action="store_true", help="reuse the bags in --workdir")
    parser.add_argument("--skip-train", action="store_true", help="reuse the checkpoint in --workdir")
    parser.add_argument("--verbose", action="store_true",
                        help="also print ffmpeg's encoder statistics and muxer notes while converting")
    parser.add_argument("train_overrides", nargs="*", help="key=value overrides for train/act_sim.yaml")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    task = load_sim().task
    timings: dict[str, float] = {}

    started = time.monotonic()
    if args.skip_record or args.skip_train:
        bags = sorted(p for p in (workdir / "bags").iterdir() if (p / "metadata.yaml").is_file())
    else:
        print(f"[1/4] recording {args.train_episodes} scripted-expert demonstrations", flush=True)
        bags = record_demonstrations(workdir, args.train_episodes)
    timings["record_s"] = time.monotonic() - started

    started = time.monotonic()
    if args.skip_train:
        checkpoint = workdir / "train" / "checkpoints" / "last" / "pretrained_model"
    else:
        print(f"[2/4] converting {len(bags)} bags to a LeRobot v3.0 dataset", flush=True)
        dataset = convert(workdir, bags, args.verbose)
        timings["convert_s"] = time.monotonic() - started
        started = time.monotonic()
        print("[3/4] training ACT on the CPU", flush=True)
        checkpoint = train(workdir, dataset, args.train_overrides)
        timings["train_s"] = time.monotonic() - started

    started = time.monotonic()
    print(f"[4/4] closed-loop evaluation on {args.eval_episodes} unseen targets", flush=True)
    results, stats = evaluate(workdir, checkpoint, args.eval_episodes)
    timings["evaluate_s"] = time.monotonic() - started

    policy_success = sum(r.final_distance <= task.success_distance for r in results)
    baseline_success = sum(r.start_distance <= task.success_distance for r in results)
    policy_distance = float(np.mean([r.final_distance for r in results]))
    baseline_distance = float(np.mean([r.start_distance for r in results]))
    summary = {
        "episodes": len(results),
        "success_distance_m": task.success_distance,
        "policy_success_rate": policy_success / len(results),
        "hold_baseline_success_rate": baseline_success / len(results),
        "policy_mean_final_distance_m": policy_distance,
        "hold_baseline_mean_distance_m": baseline_distance,
        **stats,
        "timings_s": timings,
        "episodes_detail": [asdict(r) for r in results],
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n=== closed-loop result on the simulated Koch ===")
    print(f"success rate (tcp within {task.success_distance * 100:.0f} cm of an unseen target):")
    print(f"  trained ACT policy : {policy_success}/{len(results)} = {policy_success / len(results):.0%}"
          f"   (mean final distance {policy_distance * 100:.1f} cm)")
    print(f"  hold-start baseline: {baseline_success}/{len(results)} = {baseline_success / len(results):.0%}"
          f"   (mean distance {baseline_distance * 100:.1f} cm)")
    if stats:
        print(f"chunk publish rate : {stats['chunk_publish_rate_hz']:.1f} Hz")
        print(f"inference latency  : p50 {stats['inference_latency_p50_ms']:.1f} ms, "
              f"p99 {stats['inference_latency_p99_ms']:.1f} ms")
    print(f"summary written to {workdir / 'summary.json'}")
