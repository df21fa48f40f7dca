"""launch_ros actions from a declared graph: what every `launch/*.launch.py` file returns.

Only the launch files import this module (it needs `launch` and `launch_ros`, i.e. a ROS 2
Humble/Jazzy install). The graph itself and the launch arguments come from
`koch_bringup.graph`, which `launch_graph` reads as well, so the two cannot drift.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from koch_bringup import graph
from launch import LaunchDescription


def to_actions(specs: list[graph.NodeSpec | graph.ProcessSpec]) -> list:
    """One launch_ros Node per NodeSpec, one ExecuteProcess per ProcessSpec (`ros2 bag record`)."""
    actions = []
    for spec in specs:
        if isinstance(spec, graph.ProcessSpec):
            actions.append(ExecuteProcess(cmd=list(spec.command), name=spec.name, output="screen"))
        else:
            actions.append(Node(package=spec.package, executable=spec.executable, name=spec.name,
                                namespace=spec.namespace, parameters=[spec.parameters],
                                remappings=list(spec.remappings), arguments=list(spec.arguments),
                                additional_env=spec.environment(), output="screen"))
    return actions


def launch_description(name: str) -> LaunchDescription:
    """Declared arguments (with descriptions, `ros2 launch ... --show-args`) + the graph `name`."""
    arguments = graph.LAUNCH_ARGUMENTS[name]

    def _graph(context, *_args, **_kwargs) -> list:
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments}
        return to_actions(graph.build(name, values))

    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                for a in arguments]
    return LaunchDescription([*declared, OpaqueFunction(function=_graph)])
