"""The node graphs, declared once, ROS-free.

Launch files turn these declarations into `launch_ros` Nodes; `koch_bringup.launcher`
starts the very same executables, parameters and remappings as plain processes, which
is how the tests and the demo run them on machines without `ros2 launch`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
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
    arguments: tuple[str, ...] = ()  # command-line arguments before --ros-args (rviz2's -d FILE)

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
        *sim_cameras(),
    ]


def follower_driver(port: str | None = None) -> list[NodeSpec]:
    params: dict[str, Any] = {"arm": "follower"}
    if port:
        params["port"] = port
    return [NodeSpec("koch_driver", "driver", "driver", "follower", params)]


def scripted_teleop(leader_port_link: str | None = None) -> list[NodeSpec]:
    """The scripted expert as leader arm, and teleop mirroring it onto the follower.

    With `leader_port_link`, the expert moves an emulated leader bus linked there and a leader
    driver publishes the leader's joint states (the real-robot path); without, the expert
    publishes them itself.
    """
    leader: list[NodeSpec] = []
    params: dict[str, Any] = {}
    if leader_port_link:
        params["leader_port_link"] = leader_port_link
        leader = [NodeSpec("koch_driver", "driver", "driver", "leader",
                           {"arm": "leader", "port": leader_port_link})]
    return [
        NodeSpec("koch_sim", "scripted_leader", "scripted_leader", "leader", params,
                 (("target", topic("sim_target")),)),
        *leader,
        NodeSpec("koch_driver", "teleop", "teleop", "", {},
                 (("leader_joint_states", topic("leader_joint_states")),
                  ("follower_joint_states", topic("follower_joint_states")),
                  ("follower_commands", topic("follower_joint_commands")))),
    ]


def recorder(output_dir: str, topics: list[str], types: list[str], storage: str = "mcap") -> list[NodeSpec]:
    return [NodeSpec("koch_record", "recorder", "recorder", "",
                     {"output_dir": output_dir, "topics": topics, "types": types, "storage": storage})]


def policy(checkpoint: str, device: str = "cpu", mapping: str = "mapping/koch_sim.yaml",
           enabled: bool = False, chunk_policy: str = "execute_k", dry_run: bool = False,
           deadman_timeout_s: float = 0.0) -> list[NodeSpec]:
    """The policy node; its action chunks drive the follower driver."""
    return [NodeSpec("koch_policy", "policy", "policy", "policy",
                     {"checkpoint": checkpoint, "device": device, "mapping": mapping, "enabled": enabled,
                      "chunk_policy": chunk_policy, "dry_run": dry_run, "deadman_timeout_s": deadman_timeout_s},
                     (("action_chunk", topic("follower_joint_commands")),))]


def deploy(checkpoint: str, device: str = "cpu", sim: bool = True, seed: int = 0,
           enabled: bool = False) -> list[NodeSpec]:
    """What `policy.launch.py` starts: the robot (simulated or real) and the policy node."""
    robot = sim_robot(seed) if sim else follower_driver()
    return robot + policy(checkpoint, device, enabled=enabled)


# ---- the launch files' graphs: robot, sim, teleop, record, policy --------------------------------
# Each `*.launch.py` calls exactly one of these; `launch_graph <name>` starts the same list.

# Packages that come with a ROS 2 install (apt ros-<distro>-…), not with this workspace: the
# launcher starts them when they are installed and otherwise says that they were left out.
ROS_TOOL_PACKAGES = frozenset({"robot_state_publisher", "rviz2", "rqt_robot_monitor"})
EPISODE_PATTERN = "episode_{index:04d}"  # the koch_record recorder names its bags the same way


@dataclass(frozen=True)
class ProcessSpec:
    """A process that is not one of our nodes (`ros2 bag record`): launch files use ExecuteProcess."""

    name: str
    command: tuple[str, ...]


def data_file(relative: str) -> Path:
    """A koch_bringup data file (urdf/koch.urdf, rviz/koch.rviz): installed share/ first, then the sources."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        candidate = Path(prefix) / "share" / "koch_bringup" / relative
        if prefix and candidate.is_file():
            return candidate
    candidate = Path(__file__).resolve().parents[1] / relative
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"koch_bringup data file {relative!r} not found in share/koch_bringup on "
                            "AMENT_PREFIX_PATH nor in the package sources; rebuild koch_bringup")


def robot_state_publisher() -> list[NodeSpec]:
    """TF of the follower arm from its joint states and urdf/koch.urdf."""
    return [NodeSpec("robot_state_publisher", "robot_state_publisher", "robot_state_publisher", "follower",
                     {"robot_description": data_file("urdf/koch.urdf").read_text()},
                     (("joint_states", topic("follower_joint_states")),))]


def rviz(config: str = "rviz/koch.rviz") -> list[NodeSpec]:
    """RViz (robot model, head camera, predicted chunk path) and rqt_robot_monitor for /diagnostics.

    RViz 2 has no diagnostics display, so the policy node's /diagnostics go to rqt_robot_monitor.
    """
    return [NodeSpec("rviz2", "rviz2", "rviz2", "", {}, (), ("-d", str(data_file(config)))),
            NodeSpec("rqt_robot_monitor", "rqt_robot_monitor", "robot_monitor")]


def real_robot(cameras: str = "cameras/koch_real.yaml") -> list[NodeSpec]:
    """The real follower arm (its udev serial port from koch.yaml) and the head camera of `cameras`."""
    return [*follower_driver(),
            NodeSpec("koch_camera", "camera", "camera", "head", {"config": cameras, "camera": "head"},
                     (("joint_states", topic("follower_joint_states")),))]


def robot(sim: bool = False, seed: int = 0, with_rviz: bool = False, cameras: str = "cameras/koch_real.yaml",
          port_link: str | None = None) -> list[NodeSpec]:
    """robot.launch.py (sim:=false) / sim.launch.py: arm driver, camera, robot_state_publisher, RViz."""
    arm = sim_robot(seed, port_link) if sim else real_robot(cameras)
    return arm + robot_state_publisher() + (rviz() if with_rviz else [])


def sim(seed: int = 0, with_rviz: bool = False, port_link: str | None = None) -> list[NodeSpec]:
    """sim.launch.py: the simulated Koch in place of the hardware, same topics and services."""
    return robot(True, seed, with_rviz, port_link=port_link)


def leader_teleop() -> list[NodeSpec]:
    """The real leader arm (its udev port from koch.yaml; torque off) and teleop mirroring it onto the follower."""
    # The teleop node exactly as scripted_teleop declares it (same remappings), so the two cannot drift.
    teleop_nodes = [s for s in scripted_teleop() if s.package == "koch_driver" and s.executable == "teleop"]
    return [NodeSpec("koch_driver", "driver", "driver", "leader", {"arm": "leader"}), *teleop_nodes]


def teleop(sim: bool = False, seed: int = 0, with_rviz: bool = False,
           cameras: str = "cameras/koch_real.yaml") -> list[NodeSpec]:
    """teleop.launch.py: robot + leader (the scripted expert in sim) + teleop."""
    return robot(sim, seed, with_rviz, cameras) + (scripted_teleop() if sim else leader_teleop())


def next_episode(bag_root: str | Path, pattern: str = EPISODE_PATTERN) -> int:
    """The first episode index after the bags already in `bag_root` (0 for an empty folder)."""
    import re

    prefix, rest = pattern.split("{index", 1)
    suffix = rest.split("}", 1)[1]
    name = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    root = Path(bag_root)
    used = [int(m.group(1)) for p in (root.iterdir() if root.is_dir() else []) if (m := name.match(p.name))]
    return max(used) + 1 if used else 0


def bag_record(bag_root: str, mapping: str = "mapping/koch_sim.yaml", storage: str = "mcap",
               episode: int | None = None, pattern: str = EPISODE_PATTERN) -> ProcessSpec:
    """`ros2 bag record` of the mapping's topics into `<bag_root>/<pattern>`: one bag per episode."""
    from koch_common.feature_mapping import load_mapping

    index = next_episode(bag_root, pattern) if episode is None else episode
    output = Path(bag_root) / pattern.format(index=index)
    return ProcessSpec("ros2_bag_record", ("ros2", "bag", "record", "-s", storage, "-o", str(output),
                                           *load_mapping(mapping).recorded_topics))


def record(sim: bool = False, bag_root: str = "bags", mapping: str = "mapping/koch_sim.yaml",
           storage: str = "mcap", episode: int | None = None, recorder_kind: str = "ros2bag", seed: int = 0,
           with_rviz: bool = False) -> list[NodeSpec | ProcessSpec]:
    """record.launch.py: teleop plus a recorder of the mapping's topics.

    recorder_kind `ros2bag` runs `ros2 bag record` for one episode (one launch = one bag);
    `node` runs koch_record's recorder, which writes one bag per ~/start..~/stop (no ROS CLI needed).
    """
    if recorder_kind not in ("ros2bag", "node"):
        raise ValueError(f"recorder {recorder_kind!r} is unknown; use ros2bag or node")
    from koch_common.feature_mapping import load_mapping

    graph_: list[NodeSpec | ProcessSpec] = list(teleop(sim, seed, with_rviz))
    if recorder_kind == "ros2bag":
        graph_.append(bag_record(bag_root, mapping, storage, episode))
    else:
        loaded = load_mapping(mapping)
        topics = dict(loaded.topics)
        if loaded.task_topic:
            topics.setdefault(loaded.task_topic, "std_msgs/msg/String")
        # The node recorder subscribes by type; an episode marker topic (any type) needs `ros2 bag record`.
        graph_ += recorder(str(Path(bag_root).resolve()), list(topics), list(topics.values()), storage)
    return graph_


def policy_graph(checkpoint: str, device: str = "cpu", sim: bool = True, seed: int = 0, enabled: bool = False,
                 chunk_policy: str = "", with_rviz: bool = False, realtime_priority: int = 0) -> list[NodeSpec]:
    """policy.launch.py: `deploy` (robot + policy node), robot_state_publisher and optional RViz.

    `chunk_policy` (empty: the node's default) and `realtime_priority` (0: normal scheduling) are
    passed as the policy node's parameters of the same names.
    """
    specs = deploy(checkpoint, device, sim, seed, enabled)
    overrides = {"chunk_policy": chunk_policy} if chunk_policy else {}
    if realtime_priority:
        overrides["realtime_priority"] = realtime_priority
    if overrides:
        specs = [replace(s, parameters={**s.parameters, **overrides}) if s.package == "koch_policy" else s
                 for s in specs]
    return specs + robot_state_publisher() + (rviz() if with_rviz else [])


# ---- launch arguments, declared once for the launch files and `launch_graph` ----------------------

@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


_SIM = LaunchArgument("sim", "false", "true: the simulated Koch (servo emulator + rendered camera); false: hardware")
_SEED = LaunchArgument("seed", "0", "seed of the simulated task's target sequence (sim:=true only)")
_RVIZ = LaunchArgument("rviz", "false", "true: start RViz (rviz/koch.rviz) and rqt_robot_monitor for /diagnostics")
_CAMERA = LaunchArgument("cameras", "cameras/koch_real.yaml",
                         "camera settings file (config/cameras/) of the real head camera (sim:=false)")

LAUNCH_ARGUMENTS: dict[str, tuple[LaunchArgument, ...]] = {
    "robot": (_SIM, _SEED, _RVIZ, _CAMERA),
    "sim": (_SEED, _RVIZ, LaunchArgument("port_link", "", "where the servo emulator links its pseudo-terminal; "
                                         "empty: sim.yaml's emulator.follower_port_link")),
    "teleop": (_SIM, _SEED, _RVIZ, _CAMERA),
    "record": (
        _SIM, _SEED, _RVIZ,
        LaunchArgument("bag_root", "bags", "folder of the episode bags"),
        LaunchArgument("mapping", "mapping/koch_sim.yaml",
                       "feature mapping (config/mapping/): its topics are the ones recorded"),
        LaunchArgument("storage", "mcap", "rosbag2 storage plugin: mcap or sqlite3"),
        LaunchArgument("episode", "auto",
                       "episode index of this bag (bag_root/episode_NNNN); auto: the next free index"),
        LaunchArgument("recorder", "ros2bag",
                       "ros2bag: `ros2 bag record`, one bag per launch; node: koch_record's recorder, "
                       "one bag per /recorder/start../recorder/stop"),
    ),
    "policy": (
        LaunchArgument("checkpoint", "", "LeRobot pretrained_model directory written by kuavo_train (required)"),
        LaunchArgument("device", "cpu", "torch device for inference: cpu or cuda"),
        LaunchArgument("chunk_policy", "",
                       "how action chunks are executed, the policy node's chunk_policy parameter: execute_k, "
                       "temporal_ensembling, overlap_blend, latest_only or rtc; empty: the node's default"),
        LaunchArgument("sim", "true", "true: the simulated Koch; false: the real follower arm"),
        _SEED,
        LaunchArgument("enabled", "false", "start with the policy driving the arm (else call /policy/policy/enable)"),
        LaunchArgument("realtime_priority", "0",
                       "SCHED_FIFO priority (1-99) of the policy node's callback threads, the 30 Hz timer among "
                       "them; needs CAP_SYS_NICE or an rtprio limit; 0: normal scheduling"),
        _RVIZ,
    ),
}


def _flag(value: str, name: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={value!r} must be true or false")
    return value.lower() == "true"


def build(name: str, values: dict[str, str] | None = None) -> list[NodeSpec | ProcessSpec]:
    """The graph `<name>.launch.py` starts, from string launch arguments (defaults filled in)."""
    if name not in LAUNCH_ARGUMENTS:
        raise ValueError(f"unknown graph {name!r}; use one of {sorted(LAUNCH_ARGUMENTS)}")
    declared = {a.name: a.default for a in LAUNCH_ARGUMENTS[name]}
    unknown = set(values or {}) - set(declared)
    if unknown:
        raise ValueError(f"{name}: unknown launch arguments {sorted(unknown)}; it takes {sorted(declared)}")
    v = {**declared, **(values or {})}
    seed = int(v["seed"])
    rviz_on = _flag(v["rviz"], "rviz")
    if name == "robot":
        return list(robot(_flag(v["sim"], "sim"), seed, rviz_on, v["cameras"]))
    if name == "sim":
        return list(sim(seed, rviz_on, v["port_link"] or None))
    if name == "teleop":
        return list(teleop(_flag(v["sim"], "sim"), seed, rviz_on, v["cameras"]))
    if name == "record":
        episode = None if v["episode"] == "auto" else int(v["episode"])
        return record(_flag(v["sim"], "sim"), v["bag_root"], v["mapping"], v["storage"], episode, v["recorder"],
                      seed, rviz_on)
    if not v["checkpoint"]:
        raise ValueError("policy: checkpoint:=PATH is required (a pretrained_model directory written by kuavo_train)")
    return list(policy_graph(v["checkpoint"], v["device"], _flag(v["sim"], "sim"), seed,
                             _flag(v["enabled"], "enabled"), v["chunk_policy"], rviz_on,
                             int(v["realtime_priority"])))


def sim_cameras(names: tuple[str, ...] = ("head", "wrist")) -> list[NodeSpec]:
    """The simulated cameras of config/cameras/sim.yaml (RGB + depth), one node per view.

    Each runs in the namespace of its name: /head/color/image_raw (the recorded and policy
    camera), /head/depth/image_raw, /wrist/color/image_raw, ...
    """
    return [NodeSpec("koch_camera", "camera", "camera", name, {"config": "cameras/sim.yaml", "camera": name},
                     (("joint_states", topic("follower_joint_states")), ("target", topic("sim_target"))))
            for name in names]
