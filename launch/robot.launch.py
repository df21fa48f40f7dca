"""The real Koch: follower driver, head camera, robot_state_publisher (URDF), optional RViz.

    ros2 launch koch_bringup robot.launch.py rviz:=true
    ros2 launch koch_bringup robot.launch.py sim:=true   # same graph on the simulated Koch

`ros2 launch koch_bringup robot.launch.py --show-args` lists the arguments with their descriptions.
The node graph and the arguments are declared once in koch_bringup.graph (`build("robot", ...)`,
`LAUNCH_ARGUMENTS["robot"]`); `launch_graph robot ...` starts the same graph without ROS tooling.
"""

from koch_bringup.launch_actions import launch_description


def generate_launch_description():
    return launch_description("robot")
