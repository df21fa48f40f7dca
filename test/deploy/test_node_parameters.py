"""Every node documents its parameters over DDS: what `ros2 param list` and `ros2 param describe` show.

The nodes are started the way `launch_graph` starts them: the graph's names, namespaces,
remappings and a params file of the parameters the graph passes (koch_bringup.graph), so this
also checks that every parameter a graph passes is one the node declares, of the right type.
A second rclpy node then calls each node's `list_parameters` and `describe_parameters`
services (rcl_interfaces) and compares them with the node's settings dataclass: exactly those
parameters, each with its description, type and read-only flag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, GetParameterTypes, ListParameters, SetParameters
from rclpy.node import Node
from synthetic_reach import SyntheticDataset

from koch_bringup import graph
from koch_bringup.launcher import ros_arguments
from koch_bringup.ros_session import RosSession, ros_session
from koch_camera.camera_node import CameraNode
from koch_camera.settings import CameraFile, CameraSettings
from koch_common.feature_mapping import DEFAULT_MAPPING, load_mapping
from koch_common.node_params import parameter_type
from koch_common.settings import settings_info
from koch_driver.driver_node import DriverNode
from koch_driver.settings import DriverSettings, TeleopSettings
from koch_driver.teleop_node import TeleopNode
from koch_policy.settings import PolicySettings
from koch_record.recorder_node import RecorderNode
from koch_record.settings import RecorderSettings
from koch_sim.scripted_leader_node import ScriptedLeaderNode
from koch_sim.settings import ScriptedLeaderSettings, SimWorldSettings
from koch_sim.sim_world_node import SimWorldNode

pytestmark = [pytest.mark.dds, pytest.mark.training]

# Declared by rclpy itself for every node (no description of ours to give).
ROS_OWN = {"use_sim_time", "start_type_description_service"}
NODES: dict[str, tuple[Callable[..., Node], tuple[type, ...]]] = {
    "sim_world": (SimWorldNode, (SimWorldSettings,)),
    "driver": (DriverNode, (DriverSettings,)),
    "teleop": (TeleopNode, (TeleopSettings,)),
    "scripted_leader": (ScriptedLeaderNode, (ScriptedLeaderSettings,)),
    "camera": (CameraNode, (CameraFile, CameraSettings)),
    "recorder": (RecorderNode, (RecorderSettings,)),
}
SETTINGS = {executable: settings for executable, (_, settings) in NODES.items()} | {"policy": (PolicySettings,)}
TINY_ACT = {"chunk_size": 10, "n_action_steps": 5, "dim_model": 16, "n_heads": 2, "dim_feedforward": 32,
            "n_encoder_layers": 1, "n_decoder_layers": 1, "use_vae": False, "dropout": 0.0}


def _start(ros: RosSession, spec: graph.NodeSpec, cls: Callable[..., Node], tmp_path: Path,
           extra: dict[str, Any] | None = None) -> Node:
    """`spec`'s node in this process, with the arguments the launcher gives its process."""
    spec = replace(spec, parameters={**spec.parameters, **(extra or {})})
    params_file = tmp_path / f"{spec.name}_{spec.namespace}.yaml"
    params_file.write_text(yaml.safe_dump({spec.fully_qualified_name: {"ros__parameters": spec.parameters}}))
    node = cls(context=ros.context, cli_args=ros_arguments(spec, params_file))
    assert node.get_fully_qualified_name() == spec.fully_qualified_name
    return ros.add(node)


def _check_described(ros: RosSession, probe: Node, fqn: str, settings: tuple[type, ...]) -> dict[str, Any]:
    """The node's parameters over DDS against its settings; returns {name: descriptor}."""
    listed = ros.call(probe, ListParameters, f"{fqn}/list_parameters", ListParameters.Request()).result.names
    infos = {info.name: info for cls in settings for info in settings_info(cls)}
    assert set(listed) - ROS_OWN == set(infos), f"{fqn} declares parameters outside its settings"
    names = sorted(infos)
    described = ros.call(probe, DescribeParameters, f"{fqn}/describe_parameters",
                         DescribeParameters.Request(names=names)).descriptors
    by_name = {d.name: d for d in described}
    assert sorted(by_name) == names
    for name, info in infos.items():
        descriptor = by_name[name]
        assert descriptor.description.strip(), f"{fqn} {name}: no description"
        assert descriptor.description == info.description
        assert descriptor.read_only == info.read_only, f"{fqn} {name}: read_only should be {info.read_only}"
        assert descriptor.type == parameter_type(info).value, f"{fqn} {name}: type"
        assert descriptor.additional_constraints == info.constraints()
    return by_name


def _values(ros: RosSession, probe: Node, fqn: str, names: list[str]) -> dict[str, ParameterValue] | None:
    """The parameters' values; None when one of them is unset (rclpy then answers none, `ros2 param get`
    says "Parameter not set")."""
    response = ros.call(probe, GetParameters, f"{fqn}/get_parameters", GetParameters.Request(names=names))
    if not response.values:
        return None
    assert len(response.values) == len(names)
    return dict(zip(names, response.values, strict=True))


def _set(ros: RosSession, probe: Node, fqn: str, name: str, value: ParameterValue):
    request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)])
    return ros.call(probe, SetParameters, f"{fqn}/set_parameters", request).results[0]


def test_graphs_pass_only_declared_parameters_that_differ_from_the_defaults(tmp_path: Path) -> None:
    launches = [("robot", {"sim": "true"}), ("robot", {}), ("sim", {"seed": "3", "port_link": str(tmp_path / "f")}),
                ("teleop", {"sim": "true"}), ("teleop", {}), ("record", {"recorder": "node", "storage": "sqlite3"}),
                ("policy", {"checkpoint": "/c", "chunk_policy": "rtc", "realtime_priority": "10", "sim": "false"}),
                ("policy", {"checkpoint": "/c", "device": "cpu", "enabled": "false", "chunk_policy": "execute_k"})]
    specs = [spec for name, values in launches for spec in graph.build(name, values)]
    specs += graph.scripted_teleop(str(tmp_path / "leader"))
    passed = set()
    for spec in specs:
        if not isinstance(spec, graph.NodeSpec) or spec.package in graph.ROS_TOOL_PACKAGES:
            continue
        infos = {i.name: i for cls in SETTINGS[spec.executable] for i in settings_info(cls)}
        for name, value in spec.parameters.items():
            assert name in infos, f"{spec.fully_qualified_name} is passed {name}, which it does not declare"
            info = infos[name]
            assert info.check(value) is not None
            assert info.required or value != info.plain(info.default), f"{spec.fully_qualified_name}: {name} default"
            passed.add((spec.executable, name))
    # The defaults are left out, what differs is passed.
    assert {("sim_world", "seed"), ("sim_world", "follower_port_link"), ("driver", "arm"), ("driver", "port"),
            ("scripted_leader", "leader_port_link"), ("camera", "config"), ("recorder", "storage"),
            ("policy", "chunk_policy"), ("policy", "realtime_priority")} <= passed
    assert ("policy", "device") not in passed and ("policy", "enabled") not in passed


def test_every_node_describes_its_parameters_over_dds(tmp_path: Path) -> None:
    mapping = load_mapping(DEFAULT_MAPPING)
    specs = [s for s in graph.sim_robot(port_link=str(tmp_path / "follower")) if s.namespace != "wrist"]
    specs += graph.scripted_teleop()
    specs += graph.recorder(str(tmp_path / "bags"), list(mapping.topics), list(mapping.topics.values()))
    with ros_session() as ros:
        for spec in specs:
            _start(ros, spec, NODES[spec.executable][0], tmp_path)
        probe = ros.node("parameter_probe")
        for spec in specs:
            _check_described(ros, probe, spec.fully_qualified_name, NODES[spec.executable][1])

        driver = "/follower/driver"
        # Unset (koch.yaml's value) is typed but has no value; what the graph passed has its value.
        assert _values(ros, probe, driver, ["baudrate"]) is None
        baudrate = ros.call(probe, GetParameterTypes, f"{driver}/get_parameter_types",
                            GetParameterTypes.Request(names=["baudrate"])).types
        assert list(baudrate) == [ParameterType.PARAMETER_NOT_SET]
        values = _values(ros, probe, driver, ["port", "arm"])
        assert values is not None
        assert values["port"].string_value == str(tmp_path / "follower")
        assert values["arm"].string_value == "follower"  # the default: the graph did not pass it
        refused = _set(ros, probe, driver, "torque_enable",
                       ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=False))
        assert not refused.successful and "read-only" in refused.reason
        camera = _values(ros, probe, "/head/camera", ["mount", "depth", "config"])
        assert camera is not None
        assert camera["mount"].string_value == "head" and camera["depth"].bool_value  # from cameras/sim.yaml
        assert camera["config"].string_value == "cameras/sim.yaml"


@pytest.fixture(scope="module")
def checkpoint(reach_dataset: SyntheticDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained ACT saved in LeRobot's format: enough for the node to start."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    from koch_runtime.build import build_policy  # torch and LeRobot: only for this test

    meta = LeRobotDatasetMetadata(reach_dataset.repo_id, root=reach_dataset.root)
    runtime = build_policy("act", TINY_ACT, meta.features, meta.stats,
                           ["observation.state", "observation.images.head"])
    path = tmp_path_factory.mktemp("ckpt") / "pretrained_model"
    runtime.save(path)
    return path


def test_the_policy_node_describes_its_parameters_over_dds(checkpoint: Path, tmp_path: Path) -> None:
    from koch_policy.policy_node import PolicyNode

    (spec,) = graph.policy(str(checkpoint), chunk_policy="latest_only")
    with ros_session() as ros:
        node = _start(ros, spec, PolicyNode, tmp_path, {"inference_threads": 1})
        assert isinstance(node, PolicyNode)
        probe = ros.node("parameter_probe")
        described = _check_described(ros, probe, spec.fully_qualified_name, (PolicySettings,))
        assert "one of: execute_k" in described["chunk_policy"].additional_constraints
        assert described["replan_threshold"].floating_point_range[0].to_value == 1.0
        assert _values(ros, probe, spec.fully_qualified_name, ["n_action_steps"]) is None  # unset: the checkpoint's
        values = _values(ros, probe, spec.fully_qualified_name, ["chunk_policy", "checkpoint"])
        assert values is not None
        assert values["chunk_policy"].string_value == "latest_only"
        assert values["checkpoint"].string_value == str(checkpoint)
        changed = _set(ros, probe, spec.fully_qualified_name, "chunk_policy",
                       ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="rtc"))
        assert changed.successful and node.runner.queue.name == "rtc"
        bogus = _set(ros, probe, spec.fully_qualified_name, "chunk_policy",
                     ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="bogus"))
        assert not bogus.successful and "choose one of" in bogus.reason
        fixed = _set(ros, probe, spec.fully_qualified_name, "device",
                     ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="cuda"))
        assert not fixed.successful and "read-only" in fixed.reason
