"""The node graphs: what launch files and the launcher start must exist and be consistent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from koch_bringup import graph
from koch_bringup.launcher import ros_arguments
from koch_common.topics import topics

ROOT = Path(__file__).resolve().parents[2]


def _entry_points(package: str) -> set[str]:
    setup_py = next(ROOT.glob(f"src/*/{package}/setup.py"))
    return set(re.findall(r'"(\w+) = [\w.]+:\w+"', setup_py.read_text()))


ALL_GRAPHS = {
    "sim_robot": graph.sim_robot(),
    "teleop": graph.scripted_teleop(),
    "recorder": graph.recorder("/tmp/bags", ["/a"], ["std_msgs/msg/String"]),
    "deploy_sim": graph.deploy("/tmp/ckpt"),
    "deploy_real": graph.deploy("/tmp/ckpt", sim=False),
    "robot_real": graph.robot(with_rviz=True),
    "sim": graph.sim(with_rviz=True),
    "teleop_real": graph.teleop(),
    "record_node": [s for s in graph.record(True, recorder_kind="node") if isinstance(s, graph.NodeSpec)],
    "policy_real": graph.policy_graph("/tmp/ckpt", sim=False, chunk_policy="temporal_ensembling", with_rviz=True),
}


@pytest.mark.parametrize("name", sorted(ALL_GRAPHS))
def test_every_node_names_an_existing_executable(name: str) -> None:
    for spec in ALL_GRAPHS[name]:
        if spec.package in graph.ROS_TOOL_PACKAGES:
            continue  # a ROS 2 install's package: test_launch_files checks it is an exec_depend
        assert spec.executable in _entry_points(spec.package), f"{spec.package}/{spec.executable} missing"


@pytest.mark.parametrize("name", sorted(ALL_GRAPHS))
def test_remappings_target_declared_topics(name: str) -> None:
    declared = set(topics().values())
    for spec in ALL_GRAPHS[name]:
        for _source, target in spec.remappings:
            assert target in declared, f"{spec.fully_qualified_name} remaps to undeclared topic {target}"


def test_node_names_are_unique_within_a_graph() -> None:
    for name, specs in ALL_GRAPHS.items():
        names = [s.fully_qualified_name for s in specs]
        assert len(names) == len(set(names)), name


def test_launcher_passes_name_namespace_remaps_and_parameters(tmp_path: Path) -> None:
    spec = graph.policy("/tmp/ckpt")[0]
    args = ros_arguments(spec, tmp_path / "p.yaml")
    assert args[:3] == ["--ros-args", "-r", "__node:=policy"]
    assert "__ns:=/policy" in args
    assert "action_chunk:=/follower/joint_commands" in args
    assert args[-2:] == ["--params-file", str(tmp_path / "p.yaml")]
