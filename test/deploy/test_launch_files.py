"""Launch files: valid Python whose graph is the shared declaration, and everything that graph names exists.

`launch`/`launch_ros` are not installable without a ROS 2 install, so the files are checked
with `ast` and the graph they build (koch_bringup.graph.build) is checked directly.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from koch_bringup import graph
from koch_bringup.launcher import GraphProcess, LaunchError, find_executable, parse_arguments
from koch_common.config import resolve_config_path
from koch_common.feature_mapping import load_mapping
from koch_common.topics import topics

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
BRINGUP = ROOT / "src/5_deploy/koch_bringup"
NAMES = sorted(graph.LAUNCH_ARGUMENTS)
VARIANTS = {
    "robot": [{}, {"sim": "true", "rviz": "true"}],
    "sim": [{}, {"rviz": "true", "seed": "4"}],
    "teleop": [{}, {"sim": "true"}],
    "record": [{"bag_root": "/tmp/koch_bags_x"}, {"sim": "true", "recorder": "node", "episode": "3"}],
    "policy": [{"checkpoint": "/tmp/ckpt"},
               {"checkpoint": "/tmp/ckpt", "sim": "false", "rviz": "true", "chunk_policy": "temporal_ensembling"}],
}


def _exec_depends() -> set[str]:
    return {e.text for e in ET.parse(BRINGUP / "package.xml").getroot().findall("exec_depend")}


def _entry_points(package: str) -> set[str]:
    setup_py = next(ROOT.glob(f"src/*/{package}/setup.py"))
    return set(re.findall(r'"(\w+) = [\w.]+:\w+"', setup_py.read_text()))


def test_every_declared_graph_has_its_launch_file_and_back() -> None:
    files = {p.name.removesuffix(".launch.py") for p in LAUNCH.glob("*.launch.py")}
    assert files == set(NAMES)
    assert (BRINGUP / "launch").resolve() == LAUNCH.resolve(), "koch_bringup installs launch/ (symlink)"


@pytest.mark.parametrize("name", NAMES)
def test_launch_file_is_python_that_returns_the_shared_graph(name: str) -> None:
    tree = ast.parse((LAUNCH / f"{name}.launch.py").read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    body = functions["generate_launch_description"].body
    assert len(body) == 1 and isinstance(body[0], ast.Return)
    assert ast.unparse(body[0].value) == f"launch_description({name!r})"
    imports = {(n.module, a.name) for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("koch_bringup.launch_actions", "launch_description") in imports
    assert ast.get_docstring(tree) and f"ros2 launch koch_bringup {name}.launch.py" in ast.get_docstring(tree)


def test_launch_actions_turn_every_spec_field_into_launch_ros() -> None:
    tree = ast.parse((BRINGUP / "koch_bringup/launch_actions.py").read_text())
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {("launch_ros.actions", "Node"), ("launch.actions", "DeclareLaunchArgument"),
            ("launch.actions", "ExecuteProcess"), ("launch.actions", "OpaqueFunction"),
            ("launch.substitutions", "LaunchConfiguration"), ("launch", "LaunchDescription")} <= imports
    calls = {ast.unparse(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    node_kwargs = {k.arg for k in calls["Node"].keywords}
    assert {"package", "executable", "name", "namespace", "parameters", "remappings", "arguments",
            "additional_env"} <= node_kwargs
    assert {k.arg for k in calls["ExecuteProcess"].keywords} >= {"cmd"}
    assert {k.arg for k in calls["DeclareLaunchArgument"].keywords} >= {"default_value", "description"}
    assert "graph.build" in calls and "graph.LAUNCH_ARGUMENTS" in ast.unparse(tree)


@pytest.mark.parametrize("name", NAMES)
def test_arguments_are_documented(name: str) -> None:
    for argument in graph.LAUNCH_ARGUMENTS[name]:
        assert len(argument.description) > 15, f"{name}.launch.py {argument.name}: describe it"
    declared = {a.name for a in graph.LAUNCH_ARGUMENTS[name]}
    assert "rviz" in declared
    if name == "policy":
        assert {"checkpoint", "device", "chunk_policy", "sim", "rviz"} <= declared


@pytest.mark.parametrize("name", NAMES)
def test_everything_the_graph_names_exists(name: str) -> None:
    declared_topics = set(topics().values())
    for values in VARIANTS[name]:
        specs = graph.build(name, values)
        nodes = [s for s in specs if isinstance(s, graph.NodeSpec)]
        assert len({s.fully_qualified_name for s in nodes}) == len(nodes), "unique node names"
        for spec in nodes:
            if spec.package in graph.ROS_TOOL_PACKAGES:
                assert spec.package in _exec_depends(), f"{spec.package} must be an exec_depend of koch_bringup"
            else:
                assert spec.executable in _entry_points(spec.package), f"{spec.package}/{spec.executable}"
                assert find_executable(spec.package, spec.executable).is_file()  # installed in lib/<pkg>/
            for _source, target in spec.remappings:
                assert target in declared_topics, f"{spec.fully_qualified_name} remaps to undeclared {target}"
            for i, argument in enumerate(spec.arguments):
                if spec.arguments[i - 1:i] == ("-d",):
                    assert Path(argument).is_file(), f"{spec.name}: config file {argument} missing"
            if "config" in spec.parameters:
                assert resolve_config_path(spec.parameters["config"]).is_file(), spec.parameters["config"]
            if "mapping" in spec.parameters:
                load_mapping(spec.parameters["mapping"])  # a mapping file that exists and is valid
            if "robot_description" in spec.parameters:
                assert ET.fromstring(spec.parameters["robot_description"]).tag == "robot"
        for process in (s for s in specs if isinstance(s, graph.ProcessSpec)):
            assert process.command[:3] == ("ros2", "bag", "record")


def test_rviz_config_shows_model_camera_predicted_path_and_the_sim_scene() -> None:
    rviz = yaml.safe_load((BRINGUP / "rviz/koch.rviz").read_text())
    displays = {d["Class"]: d for d in rviz["Visualization Manager"]["Displays"]}
    markers = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]
               if d["Class"] == "rviz_default_plugins/MarkerArray"}
    assert markers == {"/policy/policy/predicted_path", topics()["sim_objects"]}
    assert displays["rviz_default_plugins/RobotModel"]["Description Topic"]["Value"] == "/follower/robot_description"
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == topics()["head_image"]
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "base_link"
    rsp = graph.robot_state_publisher()[0]
    assert rsp.fully_qualified_name == "/follower/robot_state_publisher"  # publishes /follower/robot_description
    assert ("rqt_robot_monitor", "rqt_robot_monitor") in {(s.package, s.executable) for s in graph.rviz()}


def test_record_launch_runs_ros2_bag_record_one_bag_per_episode(tmp_path: Path) -> None:
    mapping = load_mapping("mapping/koch_sim.yaml")
    (tmp_path / "episode_0000").mkdir()
    (tmp_path / "episode_0001").mkdir()
    process = graph.build("record", {"bag_root": str(tmp_path), "storage": "sqlite3"})[-1]
    assert isinstance(process, graph.ProcessSpec)
    assert process.command == ("ros2", "bag", "record", "-s", "sqlite3", "-o", str(tmp_path / "episode_0002"),
                               *mapping.topics, mapping.task_topic)
    fixed = graph.build("record", {"bag_root": str(tmp_path), "episode": "7"})[-1]
    assert fixed.command[fixed.command.index("-o") + 1] == str(tmp_path / "episode_0007")
    recorder = graph.build("record", {"bag_root": str(tmp_path), "recorder": "node"})[-1]
    assert recorder.package == "koch_record"
    assert recorder.parameters["topics"] == [*mapping.topics, mapping.task_topic]  # the sim's task text too


def test_record_includes_the_mappings_task_and_episode_marker_topics(tmp_path: Path) -> None:
    source = (Path(__file__).resolve().parents[2] / "config/mapping/koch_sim.yaml").read_text()
    custom = tmp_path / "mapping.yaml"
    custom.write_text(source + "\ntask_topic: /task\nepisode_marker_topic: /episode_start\n")
    command = graph.build("record", {"bag_root": str(tmp_path / "bags"), "mapping": str(custom)})[-1].command
    assert command[-2:] == ("/task", "/episode_start")
    recorder = graph.build("record", {"bag_root": str(tmp_path / "bags"), "mapping": str(custom), "recorder": "node"})
    parameters = recorder[-1].parameters
    assert dict(zip(parameters["topics"], parameters["types"]))["/task"] == "std_msgs/msg/String"


def test_bad_launch_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown launch arguments"):
        graph.build("robot", {"simulated": "true"})
    with pytest.raises(ValueError, match="true or false"):
        graph.build("robot", {"sim": "yes"})
    with pytest.raises(ValueError, match="checkpoint:=PATH is required"):
        graph.build("policy", {})
    with pytest.raises(ValueError, match="ros2bag or node"):
        graph.build("record", {"recorder": "tape"})
    with pytest.raises(SystemExit, match="name:=value"):
        parse_arguments(["sim=true"])


def test_launcher_leaves_out_missing_ros_tools_and_refuses_a_missing_ros2_cli(tmp_path: Path, monkeypatch) -> None:
    specs = graph.build("sim", {"rviz": "true"})
    running = GraphProcess(specs, tmp_path)  # not started: only what it would start
    try:
        tools = [s for s in specs if s.package in graph.ROS_TOOL_PACKAGES]
        assert {s.package for s in tools} == {"robot_state_publisher", "rviz2", "rqt_robot_monitor"}
        assert all(s in tools for s in running.skipped) and len(running.skipped) + len(running.specs) == len(specs)
        for spec in tools:
            try:
                find_executable(spec.package, spec.executable)
                assert spec in running.specs
            except LaunchError:
                assert spec in running.skipped
    finally:
        running.stop()
    monkeypatch.setenv("PATH", str(tmp_path))  # no `ros2` on PATH
    record = GraphProcess([graph.bag_record(str(tmp_path))], tmp_path)
    with pytest.raises(LaunchError, match="recorder:=node"):
        record.start()
    record.stop()


def test_installed_share_has_launch_urdf_and_rviz() -> None:
    for relative in ["urdf/koch.urdf", "rviz/koch.rviz", *(f"launch/{n}.launch.py" for n in NAMES)]:
        path = graph.data_file(relative)
        assert "share/koch_bringup" in str(path), f"{relative} not installed: rebuild koch_bringup"


def test_real_and_simulated_teleop_share_the_teleop_node() -> None:
    real = [s for s in graph.build("teleop") if s.executable == "teleop"]
    simulated = [s for s in graph.build("teleop", {"sim": "true"}) if s.executable == "teleop"]
    assert len(real) == 1 and real == simulated
    leader = [s for s in graph.build("teleop") if s.fully_qualified_name == "/leader/driver"]
    assert leader and leader[0].parameters == {"arm": "leader"}  # the udev port of koch.yaml's leader
