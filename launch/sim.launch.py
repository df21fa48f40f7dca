"""The simulated Koch in place of the hardware: servo emulator on a pty + target, follower
driver, rendered head camera, robot_state_publisher, optional RViz. Same topics and services as robot.launch.py.

    ros2 launch koch_bringup sim.launch.py rviz:=true

`ros2 launch koch_bringup sim.launch.py --show-args` lists the arguments with their descriptions.
The node graph and the arguments are declared once in koch_bringup.graph (`build("sim", ...)`,
`LAUNCH_ARGUMENTS["sim"]`); `launch_graph sim ...` starts the same graph without ROS tooling.
"""

from koch_bringup.launch_actions import launch_description


def generate_launch_description():
    return launch_description("sim")
