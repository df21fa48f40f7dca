"""Fault drills: faults injected into the running graph while a policy drives the simulated arm.

The graph is what `policy.launch.py sim:=true` starts (koch_bringup.graph), as processes: the servo
emulator (recording every goal its servos receive), the follower driver, the head and wrist cameras
and the policy node, enabled. While the policy commands the arm, faults come one at a time:

- camera_kill: the head camera process is killed (SIGKILL), and started again at recovery;
- camera_freeze: it is stopped (SIGSTOP) and continued (SIGCONT) at recovery;
- camera_drop: a burst of frames that never come (a short SIGSTOP, 1-5 frame periods);
- bus_unplug: the servo bus's USB cable is pulled (the emulator's pty hangs up), plugged back at recovery;
- cpu_saturation: one busy process per core beside the graph;
- policy_restart: the policy process is killed mid-motion (SIGKILL) and started again;
- model_nan: the model's chunks turn NaN (the node's `~/inject_model_fault`, `fault_injection:=true`);
- estop: `/estop` true mid-motion, `~/reset_estop` at recovery.

From the commands the policy publishes to the driver, by their stamps (the node's tick times), the
drill measures the time from each fault to the first hold (a one-point command, counted in control
ticks), from each recovery to the first chunk again (motion resumed, seconds), and the longest time
the node published nothing while it was not killed (a stalled tick). It counts processes that died
without being told to, and at the end checks every
goal the servos received against koch.yaml's position, velocity and acceleration bounds, offline
(koch_sim.goal_log): a bug anywhere on the command path shows there.

`fault_drill --each-once` injects every kind once (the CI test); `fault_drill --duration-s 1800`
injects random faults for half an hour (the soak benchmark, benchmarks/bench_fault_soak.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from koch_bringup import graph
from koch_bringup.launcher import GraphProcess
from koch_bringup.ros_session import RosSession, ros_session, wait_for
from koch_common.enums import StrEnum
from koch_common.robot import load_koch
from koch_common.topics import topic
from koch_runtime.build import build_policy
from koch_sim.goal_log import GoalCheck, check_goals, read_goal_log


class FaultKind(StrEnum):
    CAMERA_KILL = "camera_kill"
    CAMERA_FREEZE = "camera_freeze"
    CAMERA_DROP = "camera_drop"
    BUS_UNPLUG = "bus_unplug"
    CPU_SATURATION = "cpu_saturation"
    POLICY_RESTART = "policy_restart"
    MODEL_NAN = "model_nan"
    ESTOP = "estop"


# Faults after which the policy must hold: its inputs or its model are gone, or it was told to stop.
# The others may hold or not (a short frame drop inside the staleness limit, a loaded CPU); a killed
# policy publishes nothing (the driver finishes the last chunk and holds its end).
HOLDS = frozenset({FaultKind.CAMERA_KILL, FaultKind.CAMERA_FREEZE, FaultKind.BUS_UNPLUG, FaultKind.MODEL_NAN,
                   FaultKind.ESTOP})
HEAD_CAMERA, POLICY = "/head/camera", "/policy/policy"
SIM_WORLD = "/sim/sim_world"


@dataclass
class FaultEvent:
    kind: FaultKind
    injected_s: float  # monotonic
    recovered_s: float = float("nan")
    hold_ticks: float | None = None  # fault -> first hold, in control periods; None: no hold came
    motion_s: float | None = None  # recovery -> first chunk; None: motion did not resume in time
    longest_silence_s: float = 0.0  # longest time without a command, from the fault to a second after recovery


@dataclass
class DrillReport:
    events: list[FaultEvent] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)  # processes that died untold, with their exit status
    goals: GoalCheck | None = None
    duration_s: float = 0.0

    def by_kind(self) -> dict[str, int]:
        counts = {kind.value: 0 for kind in FaultKind}
        for event in self.events:
            counts[event.kind.value] += 1
        return counts

    @property
    def missing_holds(self) -> list[FaultEvent]:
        return [e for e in self.events if e.kind in HOLDS and e.hold_ticks is None]

    @property
    def not_resumed(self) -> list[FaultEvent]:
        return [e for e in self.events if e.motion_s is None]

    @staticmethod
    def percentile(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    @property
    def longest_silence_s(self) -> float:
        """The longest time the policy published nothing while it was not killed, over every fault."""
        return max((e.longest_silence_s for e in self.events), default=0.0)

    @property
    def hold_ticks(self) -> list[float]:
        return [e.hold_ticks for e in self.events if e.kind in HOLDS and e.hold_ticks is not None]

    @property
    def motion_s(self) -> list[float]:
        return [e.motion_s for e in self.events if e.motion_s is not None]

    def lines(self) -> list[str]:
        goals = self.goals
        return [
            f"faults injected: {len(self.events)} in {self.duration_s:.0f} s ("
            + ", ".join(f"{k} {n}" for k, n in self.by_kind().items()) + ")",
            f"goals received: {goals.goals if goals else 0}",
            f"goals outside any bound: {goals.outside_any_bound if goals else 'not checked'}"
            + (f" ({goals.summary()})" if goals and goals.outside_any_bound else ""),
            f"fault -> hold: p50 {self.percentile(self.hold_ticks, 50):.1f}, p99 "
            f"{self.percentile(self.hold_ticks, 99):.1f} ticks over {len(self.hold_ticks)} holding faults; "
            f"no hold after {len(self.missing_holds)}",
            f"recovery -> motion: p50 {self.percentile(self.motion_s, 50):.2f} s, p99 "
            f"{self.percentile(self.motion_s, 99):.2f} s; not resumed after {len(self.not_resumed)}",
            f"longest policy silence (no command, policy not killed): "
            f"{self.longest_silence_s * 1e3:.0f} ms",
            f"node or driver crashes: {len(self.crashes)}" + (f" ({'; '.join(self.crashes)})" if self.crashes else ""),
        ]

    def to_json(self) -> dict:
        return {
            "faults_by_kind": self.by_kind(), "duration_s": self.duration_s,
            "goals_received": self.goals.goals if self.goals else 0,
            "goals_outside_any_bound": self.goals.outside_any_bound if self.goals else None,
            "goal_check": {name: asdict(j) for name, j in self.goals.joints.items()} if self.goals else None,
            "fault_to_hold_ticks_p99": self.percentile(self.hold_ticks, 99),
            "recovery_to_motion_s_p99": self.percentile(self.motion_s, 99),
            "missing_holds": len(self.missing_holds), "not_resumed": len(self.not_resumed),
            "longest_silence_s": self.longest_silence_s,
            "crashes": self.crashes,
            "events": [{**asdict(e), "kind": e.kind.value} for e in self.events],
        }


class CommandWatch:
    """Every command the policy publishes to the driver: (tick time, point count), the tick time being the
    command's header stamp (the node stamps each with its tick) on this process's monotonic clock. Stamps,
    not receive times: the drill measures when the node decided, not when DDS delivered it here."""

    def __init__(self, ros: RosSession) -> None:
        self.node = ros.node("fault_drill")
        self._lock = threading.Lock()
        self._seen: list[tuple[float, int]] = []
        self._wall_minus_monotonic = time.time() - time.monotonic()
        self.node.create_subscription(JointTrajectory, topic("follower_joint_commands"), self._on_command, 100)

    def _on_command(self, msg: JointTrajectory) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 - self._wall_minus_monotonic
        with self._lock:
            self._seen.append((stamp, len(msg.points)))

    def first_after(self, t: float, hold: bool) -> float | None:
        """Tick time of the first hold (one point) or chunk (several) after `t`."""
        with self._lock:
            return next((s for s, n in self._seen if s > t and (n == 1) == hold), None)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time between consecutive commands stamped in [start, end] (0 with fewer than two)."""
        with self._lock:
            stamps = sorted(s for s, _ in self._seen if start <= s <= end)
        return max(np.diff(stamps), default=0.0) if len(stamps) > 1 else 0.0

    def wait_first_after(self, t: float, hold: bool, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first_after(t, hold)
            if found is not None:
                return found
            time.sleep(0.02)
        return None

    def forget_before(self, t: float) -> None:
        with self._lock:
            self._seen = [(s, n) for s, n in self._seen if s >= t]


@contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """`processes` busy loops (one per core saturates the machine), killed on exit."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


class Drill:
    """Injects faults into a running simulated graph with an enabled policy and measures the reactions."""

    def __init__(self, robot: GraphProcess, policy: GraphProcess, ros: RosSession, period_s: float,
                 rng: random.Random, fault_s: tuple[float, float] = (0.5, 3.0), resume_timeout_s: float = 60.0) -> None:
        self.robot, self.policy, self.ros, self.period_s = robot, policy, ros, period_s
        self.rng = rng
        self.fault_s = fault_s
        self.resume_timeout_s = resume_timeout_s
        self.watch = CommandWatch(ros)
        self.node = self.watch.node
        self.estop_pub = self.node.create_publisher(Bool, "/estop", 10)
        self.report = DrillReport()
        self._told: set[str] = set()  # processes the drill itself stopped, while stopped

    # -- the faults ----------------------------------------------------------------------------
    def _signal(self, graph_process: GraphProcess, name: str, sig: signal.Signals) -> None:
        graph_process.process(name).send_signal(sig)

    def _set(self, service: str, value: bool) -> None:
        response = self.ros.call(self.node, SetBool, service, SetBool.Request(data=value), 20.0)
        if not response.success:
            raise RuntimeError(f"{service} refused {value}: {response.message}")

    def _restart(self, graph_process: GraphProcess, name: str) -> None:
        graph_process.restart(name)
        self._told.discard(name)

    def _kill(self, graph_process: GraphProcess, name: str) -> None:
        self._told.add(name)
        process = graph_process.process(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def _inject(self, kind: FaultKind) -> Callable[[], object]:
        """Start fault `kind`; returns what ends it."""
        if kind is FaultKind.CAMERA_KILL:
            self._kill(self.robot, HEAD_CAMERA)
            return lambda: self._restart(self.robot, HEAD_CAMERA)
        if kind in (FaultKind.CAMERA_FREEZE, FaultKind.CAMERA_DROP):
            self.robot.process(HEAD_CAMERA).send_signal(signal.SIGSTOP)
            return lambda: self.robot.process(HEAD_CAMERA).send_signal(signal.SIGCONT)
        if kind is FaultKind.BUS_UNPLUG:
            self._set(f"{SIM_WORLD}/unplug", True)
            return lambda: self._set(f"{SIM_WORLD}/unplug", False)
        if kind is FaultKind.CPU_SATURATION:
            load = ExitStack()
            load.enter_context(cpu_load(os.cpu_count() or 2))
            return load.close
        if kind is FaultKind.POLICY_RESTART:
            self._kill(self.policy, POLICY)
            return lambda: self._restart(self.policy, POLICY)
        if kind is FaultKind.MODEL_NAN:
            self._set(f"{POLICY}/inject_model_fault", True)
            return lambda: self._set(f"{POLICY}/inject_model_fault", False)
        if kind is FaultKind.ESTOP:
            self.estop_pub.publish(Bool(data=True))
            return self._reset_estop
        raise ValueError(f"unknown fault kind {kind}")

    def _reset_estop(self) -> None:
        response = self.ros.call(self.node, Trigger, f"{POLICY}/reset_estop", Trigger.Request(), 20.0)
        if not response.success:
            raise RuntimeError(f"{POLICY}/reset_estop failed: {response.message}")

    def duration_of(self, kind: FaultKind) -> float:
        """How long a fault lasts: a frame drop stays inside 1-5 frame periods, the others within `fault_s`."""
        if kind is FaultKind.CAMERA_DROP:
            return self.rng.randint(1, 5) / 30.0
        return self.rng.uniform(*self.fault_s)

    def run_fault(self, kind: FaultKind) -> FaultEvent:
        """Wait for motion, inject `kind`, end it, and wait for motion again."""
        self.require_motion(self.resume_timeout_s)
        duration = self.duration_of(kind)
        injected = time.monotonic()
        end = self._inject(kind)
        event = FaultEvent(kind, injected)
        time.sleep(max(0.0, injected + duration - time.monotonic()))
        end()
        event.recovered_s = time.monotonic()
        hold = self.watch.first_after(injected, hold=True)
        if hold is not None and hold <= event.recovered_s + 1.0:
            event.hold_ticks = (hold - injected) / self.period_s
        motion = self.watch.wait_first_after(event.recovered_s, hold=False, timeout=self.resume_timeout_s)
        event.motion_s = None if motion is None else motion - event.recovered_s
        if kind is not FaultKind.POLICY_RESTART:  # a killed node is silent by design
            event.longest_silence_s = self.watch.longest_gap(injected, event.recovered_s + 1.0)
        self.report.events.append(event)
        self.check_processes()
        self.watch.forget_before(event.recovered_s - 2.0)
        return event

    def require_motion(self, timeout: float) -> None:
        now = time.monotonic()
        if self.watch.wait_first_after(now, hold=False, timeout=timeout) is None:
            raise RuntimeError(f"the policy published no chunk for {timeout:.0f} s; see the node logs in "
                               f"{self.robot.log_dir} and {self.policy.log_dir}")

    def check_processes(self) -> None:
        for graph_process in (self.robot, self.policy):
            for spec, process in list(graph_process.processes):
                name = GraphProcess.node_name(spec)
                if process.poll() is not None and name not in self._told:
                    self.report.crashes.append(f"{name} exited with {process.returncode}")
                    graph_process.restart(name)  # the drill goes on; the crash is counted


def untrained_checkpoint(path: Path, image_shape: tuple[int, int, int]) -> Path:
    """A tiny untrained ACT for the simulated Koch's state and head camera: its actions are arbitrary,
    the harshest input for the limits. Built from code (nothing downloaded); saved like training saves."""
    arm = load_koch().follower
    names = list(arm.names)
    joints = {"dtype": "float32", "shape": (len(names),), "names": names}
    features = {"observation.state": joints, "action": dict(joints),
                "observation.images.head": {"dtype": "video", "shape": image_shape,
                                            "names": ["height", "width", "channels"]}}
    mid, half = (arm.lower + arm.upper) / 2, (arm.upper - arm.lower) / 2
    joint_stats = {"mean": mid, "std": half / 2, "min": arm.lower, "max": arm.upper}
    image_stats = {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25),
                   "min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))}
    stats = {"observation.state": joint_stats, "action": joint_stats, "observation.images.head": image_stats}
    tiny_act = {"chunk_size": 20, "n_action_steps": 10, "dim_model": 32, "n_heads": 2, "dim_feedforward": 64,
                "n_encoder_layers": 1, "n_decoder_layers": 1, "use_vae": False, "dropout": 0.0}
    runtime = build_policy("act", tiny_act, features,
                           {k: {s: np.asarray(v, np.float32) for s, v in d.items()} for k, d in stats.items()},
                           ["observation.state", "observation.images.head"])
    runtime.save(path)
    return path


def first_image_shape(ros: RosSession, timeout: float = 120.0) -> tuple[int, int, int]:
    node = ros.node("fault_drill_camera_probe")
    images: list[Image] = []
    node.create_subscription(Image, topic("head_image"), images.append, qos_profile_sensor_data)
    wait_for(lambda: bool(images), timeout, "an image from the simulated head camera")
    return images[0].height, images[0].width, 3


def run_drill(out: Path, kinds: list[FaultKind], duration_s: float | None, seed: int = 0,
              checkpoint: Path | None = None, fault_s: tuple[float, float] = (0.5, 3.0),
              log: Callable[[str], None] = print) -> DrillReport:
    """Start the graph, inject `kinds` once each in order (duration_s None) or random kinds from `kinds`
    until `duration_s` passed, each lasting between `fault_s` seconds; stop the graph and check the goal
    log. Results go to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    goal_log = out / "goals.csv"
    rng = random.Random(seed)
    arm = load_koch().follower
    # First-order servos, not MuJoCo: the drill audits the command path, whose goals must stay inside the
    # rate bounds; an arm pressed into the table by arbitrary actions would lag its goal, and the driver's
    # present-position clamp would then move goals at the arm's pace, which the goal check cannot tell apart.
    robot_specs = graph.sim_robot(seed=seed, port_link=str(out / "follower_port"), goal_log=str(goal_log),
                                  physics=False)
    with ExitStack() as stack:
        ros = stack.enter_context(ros_session())
        robot = stack.enter_context(GraphProcess(robot_specs, out / "logs"))
        states: list[JointState] = []
        ros.node("fault_drill_state_probe").create_subscription(
            JointState, topic("follower_joint_states"), states.append, 10)
        wait_for(lambda: bool(states), 120.0, "follower joint states from the simulated robot")
        if checkpoint is None:
            checkpoint = untrained_checkpoint(out / "untrained_act" / "pretrained_model", first_image_shape(ros))
            log(f"untrained ACT for the drill: {checkpoint}")
        # the model-fault service only when a drill uses it: it is off on a robot unless asked for
        injection: dict[str, Any] = {"fault_injection": True} if FaultKind.MODEL_NAN in kinds else {}
        policy = stack.enter_context(GraphProcess(graph.policy(str(checkpoint), enabled=True, **injection),
                                                  out / "logs"))
        drill = Drill(robot, policy, ros, 1.0 / 30.0, rng, fault_s)
        drill.require_motion(180.0)  # the policy node's start-up: torch, the checkpoint, the first chunk
        log(f"policy in control; injecting faults (logs in {out / 'logs'})")
        started = time.monotonic()
        plan = iter(kinds) if duration_s is None else None
        while True:
            if plan is not None:
                kind = next(plan, None)
                if kind is None:
                    break
            else:
                if time.monotonic() - started >= duration_s:  # type: ignore[operator]
                    break
                kind = rng.choice(kinds)
            event = drill.run_fault(kind)
            hold = "no hold" if event.hold_ticks is None else f"hold after {event.hold_ticks:.1f} ticks"
            motion = "not resumed" if event.motion_s is None else f"motion again {event.motion_s:.2f} s after recovery"
            log(f"  {kind.value:<15} {hold}; {motion}")
            time.sleep(rng.uniform(0.5, 2.0))
        report = drill.report
        report.duration_s = time.monotonic() - started
    # the graph is down: the sim world wrote its last goals
    report.goals = check_goals(read_goal_log(goal_log), arm, load_koch().safety)
    (out / "fault_drill.json").write_text(json.dumps(report.to_json(), indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    """`fault_drill --out DIR [--each-once | --duration-s S]`: exit status 1 when any check failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the goal log, node logs and the report")
    parser.add_argument("--checkpoint", type=Path, help="the policy to drive the arm; default: an untrained ACT")
    parser.add_argument("--each-once", action="store_true", help="every fault kind once, in order")
    parser.add_argument("--duration-s", type=float, default=1800.0, help="random faults for this long")
    every = [k.value for k in FaultKind]
    parser.add_argument("--kinds", nargs="+", choices=every, default=every, help="the fault kinds to draw from")
    parser.add_argument("--fault-s", type=float, nargs=2, default=(0.5, 3.0), metavar=("MIN", "MAX"),
                        help="how long each fault lasts (a frame drop: 1-5 frame periods)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = [FaultKind(k) for k in args.kinds]
    report = run_drill(args.out, kinds, None if args.each_once else args.duration_s, args.seed, args.checkpoint,
                       tuple(args.fault_s))
    for line in report.lines():
        print(line)
    failed = (report.crashes or report.missing_holds or report.not_resumed
              or report.goals is None or report.goals.outside_any_bound)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
