"""Robot (simulated or real) plus the policy inference node.

    ros2 launch koch_bringup policy.launch.py checkpoint:=/path/to/pretrained_model sim:=true

The node graph is declared once in koch_bringup.graph.deploy; this file only turns it
into launch_ros Nodes.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from koch_bringup import graph
from launch import LaunchDescription

ARGUMENTS = {
    "checkpoint": ("", "LeRobot pretrained_model directory written by kuavo_train"),
    "device": ("cpu", "torch device for inference: cpu or cuda"),
    "sim": ("true", "true: the simulated Koch; false: the real follower arm"),
    "seed": ("0", "seed of the simulated task's target sequence"),
    "enabled": ("false", "start with the policy driving the arm (else call /policy/policy/enable)"),
}


def _nodes(context, *_args, **_kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    specs = graph.deploy(value["checkpoint"], value["device"], value["sim"] == "true",
                         int(value["seed"]), value["enabled"] == "true")
    return [
        Node(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace,
             parameters=[s.parameters], remappings=list(s.remappings), output="screen")
        for s in specs
    ]


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
