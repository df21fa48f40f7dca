"""Robot (simulated or real) plus the policy inference node, robot_state_publisher, optional RViz.

    ros2 launch koch_bringup policy.launch.py checkpoint:=/path/to/pretrained_model sim:=true rviz:=true

`ros2 launch koch_bringup policy.launch.py --show-args` lists the arguments with their descriptions.
The node graph and the arguments are declared once in koch_bringup.graph (`build("policy", ...)`,
`LAUNCH_ARGUMENTS["policy"]`); `launch_graph policy ...` starts the same graph without ROS tooling.
"""

from koch_bringup.launch_actions import launch_description


def generate_launch_description():
    return launch_description("policy")
