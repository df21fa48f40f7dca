"""The node graphs, declared once, ROS-free.

Launch files turn these declarations into `launch_ros` Nodes; `koch_bringup.launcher`
starts the very same executables, parameters and remappings as plain processes, which
is how the tests and the demo run them on machines without `ros2 launch`.

A node's parameters, their defaults and descriptions are its settings dataclass
(`koch_policy.settings.PolicySettings`, ...): a graph passes a node only the parameters
that differ from those defaults (`node_parameters` checks each name, type and value), and
the launch arguments that set a parameter take its default and description from there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koch_camera.settings import CameraFile
from koch_common.cpu_budget import CpuBudget, CpuRole
from koch_common.feature_mapping import DEFAULT_MAPPING
from koch_common.latency_trace import DRIVER_TRACE_FILE, POLICY_TRACE_FILE
from koch_common.settings import node_parameters, setting_info
from koch_common.topics import topic
from koch_driver.settings import DriverSettings, TeleopSettings
from koch_policy.settings import PolicySettings
from koch_record.settings import RecorderSettings
from koch_sim.settings import ScriptedLeaderSettings, SimWorldSettings
from koch_sim.sim_config import load_sim, task_kind


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

    @property
    def cpu_role(self) -> CpuRole:
        return CPU_ROLES.get((self.package, self.executable), CpuRole.SUPPORT)

    def environment(self) -> dict[str, str]:
        """What the launcher and the launch files add to the node's environment: the CPU budget's library
        thread counts for its role (koch_common.cpu_budget), read by BLAS/OpenMP at import."""
        return CpuBudget.for_this_machine().environment(self.cpu_role)


# The nodes on the control path or running inference, by (package, executable); the rest support them.
CPU_ROLES = {("koch_driver", "driver"): DriverSettings.CPU_ROLE, ("koch_sim", "sim_world"): SimWorldSettings.CPU_ROLE,
             ("koch_policy", "policy"): PolicySettings.CPU_ROLE}


def sim_robot(seed: int | None = None, port_link: str | None = None, goal_log: str | None = None,
              cameras: tuple[str, ...] = ("head", "wrist"), task: str | None = None,
              physics: bool | None = None, driver_trace: str | None = None) -> list[NodeSpec]:
    """The simulated Koch: MuJoCo physics behind the servo emulator, follower driver on its pty, cameras.

    `seed`: of the first episode's layout (None: the sim world's default). `port_link` overrides
    where the emulator's pseudo-terminal is linked (sim.yaml's default), so two simulated robots
    on one machine do not share a serial port. `goal_log`: a CSV file for every goal the servos
    receive. `task`: reach, pick_place, pick_color or pick_taller (None: sim.yaml's task).
    `physics` False: first-order servos instead of MuJoCo (the fault drill's command-path audit).
    `driver_trace`: the driver's trace log (koch_common.latency_trace).
    """
    port = port_link or load_sim().emulator.follower_port_link
    return [
        NodeSpec("koch_sim", "sim_world", "sim_world", "sim",
                 node_parameters(SimWorldSettings, seed=seed, follower_port_link=port_link, goal_log=goal_log,
                                 task=task, physics=physics)),
        *follower_driver(port, driver_trace),
        *sim_cameras(cameras),
    ]


def follower_driver(port: str | None = None, trace_log: str | None = None) -> list[NodeSpec]:
    """The follower arm's driver; on `port` (None: koch.yaml's follower port), tracing commands to `trace_log`."""
    return [NodeSpec("koch_driver", "driver", "driver", "follower",
                     node_parameters(DriverSettings, port=port, trace_log=trace_log))]


def scripted_teleop(leader_port_link: str | None = None, task: str | None = None) -> list[NodeSpec]:
    """The scripted expert as leader arm, and teleop mirroring it onto the follower.

    With `leader_port_link`, the expert moves an emulated leader bus linked there and a leader
    driver publishes the leader's joint states (the real-robot path); without, the expert
    publishes them itself.
    """
    leader: list[NodeSpec] = []
    if leader_port_link:
        leader = [NodeSpec("koch_driver", "driver", "driver", "leader",
                           node_parameters(DriverSettings, arm="leader", port=leader_port_link))]
    return [
        NodeSpec("koch_sim", "scripted_leader", "scripted_leader", "leader",
                 node_parameters(ScriptedLeaderSettings, leader_port_link=leader_port_link, task=task),
                 (("objects", topic("sim_objects")), ("task", topic("sim_task")))),
        *leader,
        NodeSpec("koch_driver", "teleop", "teleop", "", node_parameters(TeleopSettings),
                 (("leader_joint_states", topic("leader_joint_states")),
                  ("follower_joint_states", topic("follower_joint_states")),
                  ("follower_commands", topic("follower_joint_commands")))),
    ]


def recorder(output_dir: str, topics: list[str], types: list[str], storage: str | None = None) -> list[NodeSpec]:
    """koch_record's recorder of `topics` (of `types`) into `output_dir`; `storage` None: the recorder's default."""
    return [NodeSpec("koch_record", "recorder", "recorder", "",
                     node_parameters(RecorderSettings, output_dir=output_dir, topics=topics, types=types,
                                     storage=storage))]


def policy(checkpoint: str, task_topic: str | None = None, **parameters: Any) -> list[NodeSpec]:
    """The policy node; its action chunks drive the follower driver.

    `task_topic`: where its instruction comes from besides the `task` parameter (the simulated world's episode
    text; default: the node's own ~/task). `parameters`: any of koch_policy.settings.PolicySettings (None or the
    default: not passed).
    """
    remaps: tuple[tuple[str, str], ...] = (("action_chunk", topic("follower_joint_commands")),)
    if task_topic:
        remaps += (("~/task", task_topic),)
    return [NodeSpec("koch_policy", "policy", "policy", "policy",
                     node_parameters(PolicySettings, checkpoint=checkpoint, **parameters), remaps)]


def deploy(checkpoint: str, sim: bool = True, seed: int | None = None, task: str | None = None,
           port_link: str | None = None, trace_dir: str | None = None, **parameters: Any) -> list[NodeSpec]:
    """What `policy.launch.py` starts: the robot (simulated, laid out for `task`, or real) and the policy node.

    `port_link`: the simulated follower's pseudo-terminal (see `sim_robot`). `trace_dir`: the policy node and
    the driver write every chunk's trace points there (koch_common.latency_trace.read_run joins them)."""
    folder = Path(trace_dir).resolve() if trace_dir else None  # the nodes may run elsewhere than here
    policy_trace = str(folder / POLICY_TRACE_FILE) if folder else None
    driver_trace = str(folder / DRIVER_TRACE_FILE) if folder else None
    robot = (sim_robot(seed, port_link=port_link, task=task, driver_trace=driver_trace) if sim
             else follower_driver(trace_log=driver_trace))
    # In the simulator the instruction is the episode's (a VLA reads it; other policies ignore it).
    return robot + policy(checkpoint, task_topic=topic("sim_task") if sim else None, trace_log=policy_trace,
                          **parameters)


# ---- the launch files' graphs: robot, sim, teleop, record, policy --------------------------------
# Each `*.launch.py` calls exactly one of these; `launch_graph <name>` starts the same list.

# Packages that come with a ROS 2 install (apt ros-<distro>-…), not with this workspace: the
# launcher starts them when they are installed and otherwise says that they were left out.
ROS_TOOL_PACKAGES = frozenset({"robot_state_publisher", "rviz2", "rqt_robot_monitor"})
# The koch_record recorder's bag names (koch_record.bag_writer.next_bag_path), for `ros2 bag record` too.
EPISODE_PATTERN = setting_info(RecorderSettings, "episode_prefix").default + "_{index:04d}"
REAL_CAMERAS = "cameras/koch_real.yaml"  # the real cell's cameras file (config/cameras/)


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


def real_robot(cameras: str = REAL_CAMERAS) -> list[NodeSpec]:
    """The real follower arm (its udev serial port from koch.yaml) and the head camera of `cameras`.

    The camera node's namespace, head, names its camera in the file.
    """
    return [*follower_driver(),
            NodeSpec("koch_camera", "camera", "camera", "head", node_parameters(CameraFile, config=cameras),
                     (("joint_states", topic("follower_joint_states")),))]


def robot(sim: bool = False, seed: int | None = None, with_rviz: bool = False, cameras: str = REAL_CAMERAS,
          port_link: str | None = None, task: str | None = None) -> list[NodeSpec]:
    """robot.launch.py (sim:=false) / sim.launch.py: arm driver, camera, robot_state_publisher, RViz."""
    arm = sim_robot(seed, port_link, task=task) if sim else real_robot(cameras)
    return arm + robot_state_publisher() + (rviz() if with_rviz else [])


def sim(seed: int | None = None, with_rviz: bool = False, port_link: str | None = None,
        task: str | None = None) -> list[NodeSpec]:
    """sim.launch.py: the simulated Koch in place of the hardware, same topics and services."""
    return robot(True, seed, with_rviz, port_link=port_link, task=task)


def leader_teleop() -> list[NodeSpec]:
    """The real leader arm (its udev port from koch.yaml; torque off) and teleop mirroring it onto the follower."""
    # The teleop node exactly as scripted_teleop declares it (same remappings), so the two cannot drift.
    teleop_nodes = [s for s in scripted_teleop() if s.package == "koch_driver" and s.executable == "teleop"]
    return [NodeSpec("koch_driver", "driver", "driver", "leader", node_parameters(DriverSettings, arm="leader")),
            *teleop_nodes]


def teleop(sim: bool = False, seed: int | None = None, with_rviz: bool = False,
           cameras: str = REAL_CAMERAS, task: str | None = None) -> list[NodeSpec]:
    """teleop.launch.py: robot + leader (the scripted expert in sim) + teleop."""
    return robot(sim, seed, with_rviz, cameras, task=task) + (scripted_teleop(task=task) if sim else leader_teleop())


def next_episode(bag_root: str | Path, pattern: str = EPISODE_PATTERN) -> int:
    """The first episode index after the bags already in `bag_root` (0 for an empty folder)."""
    import re

    prefix, rest = pattern.split("{index", 1)
    suffix = rest.split("}", 1)[1]
    name = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    root = Path(bag_root)
    used = [int(m.group(1)) for p in (root.iterdir() if root.is_dir() else []) if (m := name.match(p.name))]
    return max(used) + 1 if used else 0


def bag_record(bag_root: str, mapping: str = DEFAULT_MAPPING, storage: str | None = None,
               episode: int | None = None, pattern: str = EPISODE_PATTERN) -> ProcessSpec:
    """`ros2 bag record` of the mapping's topics into `<bag_root>/<pattern>`: one bag per episode.

    `storage` None: the recorder node's default, so both recorders write the same kind of bag.
    """
    from koch_common.feature_mapping import load_mapping

    index = next_episode(bag_root, pattern) if episode is None else episode
    output = Path(bag_root) / pattern.format(index=index)
    plugin = storage or setting_info(RecorderSettings, "storage").default
    return ProcessSpec("ros2_bag_record", ("ros2", "bag", "record", "-s", plugin, "-o", str(output),
                                           *load_mapping(mapping).recorded_topics))


def record(sim: bool = False, bag_root: str | None = None, mapping: str = DEFAULT_MAPPING,
           storage: str | None = None, episode: int | None = None, recorder_kind: str = "ros2bag",
           seed: int | None = None, with_rviz: bool = False, task: str | None = None) -> list[NodeSpec | ProcessSpec]:
    """record.launch.py: teleop plus a recorder of the mapping's topics.

    recorder_kind `ros2bag` runs `ros2 bag record` for one episode (one launch = one bag);
    `node` runs koch_record's recorder, which writes one bag per ~/start..~/stop (no ROS CLI needed).
    `bag_root` None: the recorder's default output_dir.
    """
    if recorder_kind not in ("ros2bag", "node"):
        raise ValueError(f"recorder {recorder_kind!r} is unknown; use ros2bag or node")
    from koch_common.feature_mapping import load_mapping

    bag_root = bag_root or setting_info(RecorderSettings, "output_dir").default

    graph_: list[NodeSpec | ProcessSpec] = list(teleop(sim, seed, with_rviz, task=task))
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


def policy_graph(checkpoint: str, sim: bool = True, seed: int | None = None, with_rviz: bool = False,
                 task: str | None = None, trace_dir: str | None = None, **parameters: Any) -> list[NodeSpec]:
    """policy.launch.py: `deploy` (robot + policy node), robot_state_publisher and optional RViz.

    `parameters` (device, enabled, chunk_policy, realtime_priority, ...; None: the node's default)
    are the policy node's parameters of the same names.
    """
    return (deploy(checkpoint, sim, seed, task, trace_dir=trace_dir, **parameters) + robot_state_publisher()
            + (rviz() if with_rviz else []))


# ---- launch arguments, declared once for the launch files and `launch_graph` ----------------------

@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


# The policy node's parameters that policy.launch.py passes on, as launch arguments of the same names.
POLICY_ARGUMENTS = ("checkpoint", "runtime", "device", "chunk_policy", "enabled", "realtime_priority")


def _launch_text(value: Any) -> str:
    """A parameter value as a launch argument writes it."""
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parameter_argument(cls: type, name: str, node: str, when: str = "") -> LaunchArgument:
    """A launch argument setting parameter `name` of settings `cls`: the parameter's default and description."""
    info = setting_info(cls, name)
    constraints = info.constraints()
    return LaunchArgument(name, "" if info.required else _launch_text(info.plain(info.default)),
                          f"the {node} node's {name}: {info.description}" + (f" ({constraints})" if constraints else "")
                          + when)


def _parameter_value(cls: type, name: str, text: str) -> Any:
    """A launch argument's text as the type of parameter `name` of `cls`; empty: None (the node's default)."""
    if text == "":
        return None
    kind = setting_info(cls, name).scalar
    try:
        if kind is bool:
            return _flag(text, name)
        return kind(text) if kind in (int, float) else text
    except ValueError:
        raise ValueError(f"launch argument {name}:={text!r} must be {kind.__name__}") from None


_SIM = LaunchArgument("sim", "false", "true: the simulated Koch (MuJoCo behind the servo emulator, rendered "
                      "cameras); false: hardware")
_SEED = _parameter_argument(SimWorldSettings, "seed", "sim_world", " (sim:=true only)")
_TASK = _parameter_argument(SimWorldSettings, "task", "sim_world", " (sim:=true only)")
_RVIZ = LaunchArgument("rviz", "false", "true: start RViz (rviz/koch.rviz) and rqt_robot_monitor for /diagnostics")
_CAMERA = LaunchArgument("cameras", REAL_CAMERAS,
                         "camera settings file (config/cameras/) of the real head camera (sim:=false)")

LAUNCH_ARGUMENTS: dict[str, tuple[LaunchArgument, ...]] = {
    "robot": (_SIM, _SEED, _TASK, _RVIZ, _CAMERA),
    "sim": (_SEED, _TASK, _RVIZ, LaunchArgument("port_link", "", "where the servo emulator links its pseudo-terminal; "
                                         "empty: sim.yaml's emulator.follower_port_link")),
    "teleop": (_SIM, _SEED, _TASK, _RVIZ, _CAMERA),
    "record": (
        _SIM, _SEED, _TASK, _RVIZ,
        LaunchArgument("bag_root", setting_info(RecorderSettings, "output_dir").default,
                       "folder of the episode bags"),
        LaunchArgument("mapping", DEFAULT_MAPPING,
                       "feature mapping (config/mapping/): its topics are the ones recorded"),
        _parameter_argument(RecorderSettings, "storage", "recorder"),
        LaunchArgument("episode", "auto",
                       "episode index of this bag (bag_root/episode_NNNN); auto: the next free index"),
        LaunchArgument("recorder", "ros2bag",
                       "ros2bag: `ros2 bag record`, one bag per launch; node: koch_record's recorder, "
                       "one bag per /recorder/start../recorder/stop"),
    ),
    "policy": (
        *(_parameter_argument(PolicySettings, name, "policy") for name in POLICY_ARGUMENTS),
        LaunchArgument("sim", "true", "true: the simulated Koch; false: the real follower arm"),
        LaunchArgument("trace_dir", "", "a folder for the policy node's and the driver's trace logs of every "
                       "chunk, capture to bus write (koch_common.latency_trace); empty: none"),
        _SEED,
        _TASK,
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
    seed = _parameter_value(SimWorldSettings, "seed", v["seed"])
    task = _parameter_value(SimWorldSettings, "task", v["task"])
    if task is not None:
        task_kind(task)  # an unknown task fails here, with the list of tasks
    rviz_on = _flag(v["rviz"], "rviz")
    if name == "robot":
        return list(robot(_flag(v["sim"], "sim"), seed, rviz_on, v["cameras"], task=task))
    if name == "sim":
        return list(sim(seed, rviz_on, v["port_link"] or None, task))
    if name == "teleop":
        return list(teleop(_flag(v["sim"], "sim"), seed, rviz_on, v["cameras"], task))
    if name == "record":
        episode = None if v["episode"] == "auto" else int(v["episode"])
        storage = _parameter_value(RecorderSettings, "storage", v["storage"])
        return record(_flag(v["sim"], "sim"), v["bag_root"], v["mapping"], storage, episode, v["recorder"],
                      seed, rviz_on, task)
    if not v["checkpoint"]:
        raise ValueError("policy: checkpoint:=PATH is required (a pretrained_model directory written by kuavo_train)")
    parameters = {name: _parameter_value(PolicySettings, name, v[name]) for name in POLICY_ARGUMENTS}
    return list(policy_graph(sim=_flag(v["sim"], "sim"), seed=seed, with_rviz=rviz_on, task=task,
                             trace_dir=v["trace_dir"] or None, **parameters))


def sim_cameras(names: tuple[str, ...] = ("head", "wrist")) -> list[NodeSpec]:
    """The simulated cameras of config/cameras/sim.yaml (RGB + depth), one node per view.

    Each runs in the namespace of its name, which names its camera in the file: /head/color/image_raw
    (the recorded and policy camera), /head/depth/image_raw, /wrist/color/image_raw, ...
    """
    return [NodeSpec("koch_camera", "camera", "camera", name, node_parameters(CameraFile, config="cameras/sim.yaml"),
                     (("joint_states", topic("sim_joint_states")), ("objects", topic("sim_objects"))))
            for name in names]
