"""The declared graphs started as processes from the installed executables, as the demo does.

Needs the workspace built and sourced (`scripts/test.sh` does both).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from std_srvs.srv import Trigger

from koch_bringup import graph
from koch_bringup.launcher import GraphProcess
from koch_bringup.ros_session import ros_session, wait_for
from koch_bringup.world_probe import HOME_TOLERANCE_RAD
from koch_common.feature_mapping import load_mapping
from koch_common.robot import load_koch
from koch_common.topics import topic
from koch_sim.sim_config import load_sim

pytestmark = pytest.mark.dds


def test_record_graph_records_a_pick_color_episode_into_an_mcap_bag(tmp_path: Path) -> None:
    """The expert picks the named cube through the real bus; the bag becomes a dataset with the task text."""
    mapping = load_mapping("mapping/koch_sim.yaml")
    topics = dict(mapping.topics)
    topics[mapping.task_topic] = "std_msgs/msg/String"
    specs = (graph.sim_robot(seed=3, port_link=str(tmp_path / "follower"), cameras=("head",), task="pick_color")
             + graph.scripted_teleop(task="pick_color")
             + graph.recorder(str(tmp_path / "bags"), list(topics), list(topics.values())))
    with GraphProcess(specs, tmp_path / "logs") as running, ros_session() as ros:
        node = ros.node("probe")
        from sensor_msgs.msg import JointState

        states: list[JointState] = []
        node.create_subscription(JointState, topic("follower_joint_states"), states.append, 10)
        try:
            wait_for(lambda: len(states) > 5, 120.0, "follower joint states from the launched graph")

            def trigger(name: str) -> str:
                response = ros.call(node, Trigger, name, Trigger.Request(), timeout=30.0)
                assert response.success, response.message
                return response.message

            # The arm slumps until the driver enables torque; lay the scene out only once it is home again.
            trigger("/leader/scripted_leader/go_home")
            home = np.array(load_koch().home)
            wait_for(lambda: np.abs(np.array(states[-1].position) - home).max() <= HOME_TOLERANCE_RAD, 30.0,
                     "the follower at home")
            text = trigger("/sim/sim_world/new_episode").split(": ", 1)[1]
            start = np.array(states[-1].position)
            trigger("/recorder/start")

            refusals: list[str] = []

            def run_expert() -> bool:  # the leader refuses until the scene reached it over DDS
                response = ros.call(node, Trigger, "/leader/scripted_leader/run_expert", Trigger.Request(), 30.0)
                if not response.success:
                    refusals.append(response.message)
                    time.sleep(0.1)
                return response.success

            try:
                wait_for(run_expert, 30.0, "the scripted leader to accept the demonstration (scene received)")
            except TimeoutError as err:
                raise TimeoutError(f"{err}; its last answers: {sorted(set(refusals[-20:]))}") from None
            time.sleep(load_sim().tasks.pick_color.episode_duration_s)
            stop_reply = trigger("/recorder/stop").split()
            bag = Path(stop_reply[0])
            reported = {name: int(n) for name, n in (item.rsplit("=", 1) for item in stop_reply[1:])}
            running.check_alive()
        finally:
            running.check_alive()
        moved = np.abs(np.array(states[-1].position) - start).max()
    assert moved > 0.1, "teleop made the follower follow the scripted leader"
    assert (bag / "metadata.yaml").is_file()
    with AnyReader([bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert set(counts) == set(topics)
    # Every message the recorder took is in the bag, and each stream is a stream, not a sample.
    # (Rates depend on the host's load; they are not what this test is about.)
    assert counts == reported
    assert all(n >= 10 for name, n in counts.items() if name != mapping.task_topic), counts
    assert counts[mapping.task_topic] >= 1
    assert bag.parent == tmp_path / "bags" and any(bag.glob("*.mcap"))
    _check_live_bag_converts(bag, mapping, tmp_path, text)


def _check_live_bag_converts(bag: Path, mapping, tmp_path: Path, text: str) -> None:
    """The bag the live sim graph recorded becomes a LeRobot dataset of recorded values, with the task text."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from koch_convert.convert import convert_bags

    # A loaded host stalls the live streams now and then; the quality gate is tested elsewhere.
    lenient = load_mapping("mapping/koch_sim.yaml", ["limits.max_stale_fraction=1.0", "limits.max_gap_s=5.0"])
    root = convert_bags([bag], lenient, tmp_path / "dataset", "local/live_sim", vcodec="h264")
    dataset = LeRobotDataset("local/live_sim", root=root)
    assert dataset.num_episodes == 1 and dataset.num_frames >= 60  # 5 s recorded at 30 Hz
    assert dataset[0]["task"] == text and text.startswith("pick up the ")
    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic == topic("follower_joint_states")]
        recorded = np.array([reader.deserialize(raw, c.msgtype).position
                             for c, _, raw in reader.messages(connections=connections)])
    states = np.stack([dataset[i]["observation.state"].numpy() for i in range(dataset.num_frames)])
    # Hold policy: every frame's state is one of the recorded joint states, never an invented one.
    distance = np.abs(states[:, None, :] - recorded[None, :, :].astype(np.float32)).max(axis=2).min(axis=1)
    assert distance.max() < 1e-6
    image = dataset[dataset.num_frames - 1]["observation.images.head"]  # the last video frame decodes
    assert tuple(image.shape) == (3, 96, 128)


def test_launch_graph_cli_starts_a_launch_files_graph_and_stops_it_on_sigint(tmp_path: Path) -> None:
    import signal
    import subprocess

    from koch_bringup.launcher import find_executable

    command = [str(find_executable("koch_bringup", "launch_graph")), "sim", "seed:=5",
               f"port_link:={tmp_path / 'follower'}", "--log-dir", str(tmp_path / "logs")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with ros_session() as ros:
            from sensor_msgs.msg import JointState

            node = ros.node("probe")
            states: list[JointState] = []
            node.create_subscription(JointState, topic("follower_joint_states"), states.append, 10)
            wait_for(lambda: len(states) > 3 or process.poll() is not None, 120.0, "joint states from launch_graph sim")
            assert process.poll() is None, process.stdout.read()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    # Where no ROS 2 install provides robot_state_publisher, the launcher says it left it out.
    from koch_bringup.launcher import ros_tool_available

    left_out = "left out robot_state_publisher/robot_state_publisher" in output
    assert left_out != ros_tool_available("robot_state_publisher", "robot_state_publisher"), output
    assert {p.name for p in (tmp_path / "logs").iterdir()} >= {"sim_sim_world.log", "follower_driver.log",
                                                               "head_camera.log"}
