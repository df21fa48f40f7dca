"""The orchestrator's view of a running simulated graph, shared by the demo, `rollout` and `expert_check`.

A probe node beside the graph reads the follower's joint state, the sim's objects and every node's
diagnostics, calls the nodes' services (new episode, expert, recorder, policy enable) and judges the
task the way koch_sim.tasks does. The graph itself does not know it is being watched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import ReentrantCallbackGroup
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import MarkerArray

from koch_bringup import graph
from koch_bringup.launcher import GraphProcess
from koch_bringup.ros_session import RosSession, wait_for
from koch_common.kinematics import tcp_position
from koch_common.robot import load_koch
from koch_common.topics import topic
from koch_sim.expert import GRIPPER
from koch_sim.layout import Layout, SceneObject
from koch_sim.sim_config import load_sim, task_kind
from koch_sim.tasks import Outcome, block_down_on, judge, sample_layout
from koch_sim.world_msgs import markers_to_objects

TRAIN_SEED = 0
EVAL_SEED = 1000  # evaluation layouts (seeds 1000 and up) were never demonstrated (training: 0..999)
FIRST_EVAL_SEED = EVAL_SEED + 1  # a sim world started on seed N lays out N + 1 for its first new episode
HOME_TOLERANCE_RAD = 0.05  # every arm joint this close to koch.yaml's home: the arm is clear of the workspace
HOME_TIMEOUT_S = 10.0
POLICY_HARDWARE_ID = "policy"  # the policy node's DiagnosticStatus.hardware_id
SAFETY_PREFIX = "safety_"      # diagnostics keys counting safety-layer interventions, by kind


@dataclass(frozen=True)
class StatusReport:
    """One node's latest DiagnosticStatus: when it arrived (monotonic s) and its key-values."""

    received: float
    hardware_id: str
    values: dict[str, str]


class WorldProbe:
    """Joint states, the scene and diagnostics of the running graph, and its services."""

    def __init__(self, session: RosSession, task: str | None = None) -> None:
        self.session = session
        self.node = session.node("koch_probe")
        self.koch = load_koch()
        self.sim = load_sim()
        self.task = task_kind(task or self.sim.task)
        self.names = self.koch.follower.names
        self.joints: np.ndarray | None = None
        self.objects: tuple[SceneObject, ...] = ()
        self.diagnostics: list[dict[str, str]] = []  # the policy node's, in order
        self.statuses: dict[str, StatusReport] = {}  # every node's latest, by status name
        # Reentrant: the session's multi-threaded executor spins hot on a mutually exclusive group while
        # one of its callbacks runs (every message here would cost a busy wait); these only store.
        self.callback_group = ReentrantCallbackGroup()
        group = self.callback_group
        self.node.create_subscription(JointState, topic("follower_joint_states"), self._on_joints, 10,
                                      callback_group=group)
        self.node.create_subscription(MarkerArray, topic("sim_objects"), self._on_objects, 10, callback_group=group)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10,
                                      callback_group=group)
        self.command_pub = self.node.create_publisher(JointTrajectory, topic("follower_joint_commands"), 10)

    def _on_joints(self, msg: JointState) -> None:
        by_name = dict(zip(msg.name, msg.position))
        self.joints = np.array([by_name[n] for n in self.names])

    def _on_objects(self, msg: MarkerArray) -> None:
        self.objects = markers_to_objects(msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            self.statuses[status.name] = StatusReport(now, status.hardware_id, values)
            if status.hardware_id == POLICY_HARDWARE_ID:
                self.diagnostics.append(values)

    def _now(self, layout: Layout) -> tuple[tuple[SceneObject, ...], np.ndarray]:
        """The layout's objects as last published, and the tcp from the follower's joint state."""
        if self.joints is None:
            raise RuntimeError("no follower joint state received yet: is the follower driver running?")
        now = {o.name: o for o in self.objects}
        return tuple(now.get(o.name, o) for o in layout.objects), tcp_position(self.joints, self.koch.kinematics)

    def outcome(self, layout: Layout) -> Outcome:
        """How the episode stands now (koch_sim.tasks.judge)."""
        objects, tcp = self._now(layout)
        return judge(layout, objects, tcp, self.sim)

    def block_down_on(self, layout: Layout) -> str | None:
        """The block the jaws are down on now (koch_sim.tasks.block_down_on)."""
        objects, tcp = self._now(layout)
        return block_down_on(layout, objects, tcp)

    def safety_counts(self) -> dict[str, int]:
        """Safety-layer interventions so far, by `<node>.<kind>`, from each node's latest diagnostics."""
        counts: dict[str, int] = {}
        for report in self.statuses.values():
            source = "policy" if report.hardware_id == POLICY_HARDWARE_ID else "driver"
            for key, value in report.values.items():
                if key.startswith(SAFETY_PREFIX):
                    name = f"{source}.{key[len(SAFETY_PREFIX):]}"
                    counts[name] = counts.get(name, 0) + int(value)
        return counts

    def wait_for_safety_counts_after(self, instant: float, timeout: float = 3.0) -> None:
        """Until every status that counts interventions has been reported again after `instant` (monotonic s)."""
        wait_for(lambda: all(r.received > instant for r in self.statuses.values()
                             if any(k.startswith(SAFETY_PREFIX) for k in r.values)),
                 timeout, "fresh diagnostics from the policy node and the driver")

    def trigger(self, service: str, retry_s: float = 0.0) -> str:
        """Call a Trigger service; a refusal is retried for `retry_s` (a node still waiting for its inputs)."""
        deadline = time.monotonic() + retry_s
        while True:
            response = self.session.call(self.node, Trigger, service, Trigger.Request())
            if response.success:
                return response.message
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{service} failed: {response.message}")
            time.sleep(0.2)

    def enable_policy(self, enabled: bool, timeout: float = 10.0) -> None:
        request = SetBool.Request(data=enabled)
        if not self.session.call(self.node, SetBool, "/policy/policy/enable", request, timeout).success:
            raise RuntimeError(f"the policy node refused enable={enabled}")

    def wait_until_home(self, timeout: float = HOME_TIMEOUT_S) -> None:
        """Until the follower's arm stands at the home pose; something must already be sending it there.

        The gripper is not checked: jaws closed on a wedged object may not open, and do not reach into
        the workspace."""
        home = np.array(self.koch.home)

        def at_home() -> bool:
            return self.joints is not None and bool(
                np.all(np.abs(self.joints - home)[:GRIPPER] <= HOME_TOLERANCE_RAD))

        try:
            wait_for(at_home, timeout, "the follower at the home pose")
        except TimeoutError:
            error = "no joint state" if self.joints is None else \
                f"joint errors {np.round(self.joints - home, 3).tolist()} rad"
            raise TimeoutError(
                f"the follower did not reach home within {timeout:.0f} s ({error}); a new layout is only placed "
                "with the arm clear of the workspace. Check the driver's and teleop's logs (torque off, an "
                "overload, or nothing commanding the arm home).") from None

    def new_episode(self) -> Layout:
        """The sim's next seeded layout (the same one sample_layout draws for that seed), once it is published.

        The arm must be home first (`wait_until_home`): objects laid out under an arm the last episode
        left low, or one still rising from where it slumped before the driver enabled torque, are
        pushed off the table.
        """
        self.wait_until_home()
        message = self.trigger("/sim/sim_world/new_episode")  # "seed N: text"
        seed = int(message.split(":")[0].split()[1])
        layout = sample_layout(self.task, seed, self.sim)
        wait_for(lambda: _same_scene(layout.objects, self.objects), 5.0, f"the layout of seed {seed} on /sim/objects")
        return layout

    def send_home(self, duration: float) -> None:
        """An operator's reset: a one-point trajectory to the home pose, straight to the driver."""
        msg = JointTrajectory()
        msg.joint_names = self.names
        sec = int(duration)
        msg.points = [JointTrajectoryPoint(positions=[float(v) for v in self.koch.home])]
        msg.points[0].time_from_start.sec = sec
        msg.points[0].time_from_start.nanosec = int((duration - sec) * 1e9)
        self.command_pub.publish(msg)


def _same_scene(expected: tuple[SceneObject, ...], seen: tuple[SceneObject, ...], tolerance_m: float = 2e-3) -> bool:
    """`seen` is `expected` at its start poses: the same names, each within `tolerance_m`."""
    where = {o.name: np.asarray(o.position) for o in seen}
    return set(where) == {o.name for o in expected} and all(
        np.linalg.norm(where[o.name] - o.position) <= tolerance_m for o in expected)


@contextmanager
def running_world(specs: list[graph.NodeSpec], log_dir: Path,
                  task: str | None = None) -> Iterator[tuple[GraphProcess, WorldProbe]]:
    """Start `specs` as processes and a probe on them; wait until the follower reports state."""
    with GraphProcess(specs, log_dir) as running:
        session = RosSession()
        try:
            probe = WorldProbe(session, task)
            wait_for(lambda: probe.joints is not None, 30.0, "follower joint states")
            yield running, probe
        finally:
            session.close()


def expert_episode(probe: WorldProbe, running: GraphProcess, recording: bool) -> tuple[Layout, Outcome, str]:
    """One scripted-expert episode: leader home, next layout, (recorder start), expert, (stop)."""
    running.check_alive()
    probe.trigger("/leader/scripted_leader/go_home")
    layout = probe.new_episode()
    if recording:
        probe.trigger("/recorder/start")
    probe.trigger("/leader/scripted_leader/run_expert", retry_s=5.0)
    time.sleep(probe.sim.tasks.duration_s(probe.task))
    bag = probe.trigger("/recorder/stop").split()[0] if recording else ""
    return layout, probe.outcome(layout), bag
