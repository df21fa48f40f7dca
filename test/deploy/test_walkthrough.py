"""The README walk-through: every command it runs is a real entry point with real options and arguments.

(The walk-through itself takes minutes; it was run as written on the simulated Koch. This test
keeps it from drifting from the code: renamed executables, options, config keys or launch
arguments fail here.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from koch_bringup import graph
from koch_bringup.launcher import find_executable, parse_arguments
from koch_common.config import read_yaml

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Walk-through: each use, step by step, on the simulated robot"
SHELL = {"source", "kill", "wait", "sleep", "tail"}


def _commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            assert not line.startswith("ros2 "), f"mark ROS 2 CLI lines with '# ROS 2 CLI': {line}"
            for part in re.split(r"&&|&$", line):
                if part.strip():
                    commands.append(shlex.split(part))
    return commands


def _entry_points() -> dict[str, tuple[str, str]]:
    """executable -> (package, module file) for every console script of the workspace."""
    found = {}
    for setup_py in ROOT.glob("src/*/*/setup.py"):
        package = setup_py.parent.name
        for name, module in re.findall(r'"(\w+) = ([\w.]+):\w+"', setup_py.read_text()):
            found[name] = (package, str(setup_py.parent / (module.replace(".", "/") + ".py")))
    return found


def test_walkthrough_covers_every_use() -> None:
    executables = {c[0] for c in _commands()}
    assert {"launch_graph", "record_episodes", "bag_to_lerobot", "train", "rollout"} <= executables


def test_every_command_is_an_installed_entry_point_with_real_options() -> None:
    entry_points = _entry_points()
    for command in _commands():
        name, args = command[0], command[1:]
        if name in SHELL:
            continue
        assert name in entry_points, f"{name} is not a console script of the workspace"
        package, module = entry_points[name]
        assert find_executable(package, name).is_file()  # what scripts/env.sh puts on PATH
        source = Path(module).read_text()
        for option in (a.split("=", 1)[0] for a in args if a.startswith("--")):
            assert f'"{option}"' in source, f"{name} has no option {option}"


def test_launch_graph_lines_name_declared_graphs_and_arguments() -> None:
    lines = [c for c in _commands() if c[0] == "launch_graph"]
    assert {c[1] for c in lines} >= {"record", "policy"}
    for command in lines:
        values = parse_arguments([a for a in command[2:] if ":=" in a])
        assert graph.build(command[1], values)  # raises on an unknown graph, argument or value


def test_train_overrides_are_config_keys() -> None:
    fields = (ROOT / "src/4_train/kuavo_train/kuavo_train/config.py").read_text()
    for command in (c for c in _commands() if c[0] == "train"):
        config = read_yaml(command[command.index("--config") + 1])
        for override in (a for a in command[1:] if "=" in a and not a.startswith("--")):
            key = override.split("=", 1)[0]
            node = config
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            assert node is not None or re.search(rf"^\s+{re.escape(key)}: ", fields, re.M), \
                f"train override {key} is not a config key"
