"""The node graphs, declared once, ROS-free.

Launch files turn these declarations into `launch_ros` Nodes; `koch_bringup.launcher`
starts the very same executables, parameters and remappings as plain processes, which
is how the tests and the demo run them on machines without `ros2 launch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from koch_common.topics import topic
from koch_sim.sim_config import load_sim


@dataclass(frozen=True)
class NodeSpec:
    package: str
    executable: str
    name: str
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()

    @property
    def fully_qualified_name(self) -> str:
        return f"/{self.namespace}/{self.name}" if self.namespace else f"/{self.name}"


def sim_robot(seed: int = 0, port_link: str | None = None) -> list[NodeSpec]:
    """The simulated Koch: servo emulator + target, follower driver on its pty, head camera.

    `port_link` overrides where the emulator's pseudo-terminal is linked (sim.yaml's default),
    so two simulated robots on one machine do not share a serial port.
    """
    port = port_link or load_sim().emulator.follower_port_link
    return [
        NodeSpec("koch_sim", "sim_world", "sim_world", "sim",
                 {"seed": seed, "follower_port_link": port}),
        *follower_driver(port),
        NodeSpec("koch_camera", "camera", "camera", "head", {"source": "sim"},
                 (("joint_states", topic("follower_joint_states")), ("target", topic("sim_target")))),
    ]


def follower_driver(port: str | None = None) -> list[NodeSpec]:
    params: dict[str, Any] = {"arm": "follower"}
    if port:
        params["port"] = port
    return [NodeSpec("koch_driver", "driver", "driver", "follower", params)]


def scripted_teleop() -> list[NodeSpec]:
    """The scripted expert as leader arm, and teleop mirroring it onto the follower."""
    return [
        NodeSpec("koch_sim", "scripted_leader", "scripted_leader", "leader", {},
                 (("target", topic("sim_target")),)),
        NodeSpec("koch_driver", "teleop", "teleop", "", {},
                 (("leader_joint_states", topic("leader_joint_states")),
                  ("follower_commands", topic("follower_joint_commands")))),
    ]


def recorder(output_dir: str, topics: list[str], types: list[str], storage: str = "mcap") -> list[NodeSpec]:
    return [NodeSpec("koch_record", "recorder", "recorder", "",
                     {"output_dir": output_dir, "topics": topics, "types": types, "storage": storage})]


def policy(checkpoint: str, device: str = "cpu", mapping: str = "mapping/koch_sim.yaml",
           enabled: bool = False) -> list[NodeSpec]:
    """The policy node; its action chunks drive the follower driver."""
    return [NodeSpec("koch_policy", "policy", "policy", "policy",
                     {"checkpoint": checkpoint, "device": device, "mapping": mapping, "enabled": enabled},
                     (("action_chunk", topic("follower_joint_commands")),))]


def deploy(checkpoint: str, device: str = "cpu", sim: bool = True, seed: int = 0,
           enabled: bool = False) -> list[NodeSpec]:
    """What `policy.launch.py` starts: the robot (simulated or real) and the policy node."""
    robot = sim_robot(seed) if sim else follower_driver()
    return robot + policy(checkpoint, device, enabled=enabled)
