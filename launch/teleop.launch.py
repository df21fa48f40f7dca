"""Robot + leader arm + teleop (the follower mirrors the leader). With sim:=true the scripted
expert plays the leader arm.

    ros2 launch koch_bringup teleop.launch.py
    ros2 launch koch_bringup teleop.launch.py sim:=true

`ros2 launch koch_bringup teleop.launch.py --show-args` lists the arguments with their descriptions.
The node graph and the arguments are declared once in koch_bringup.graph (`build("teleop", ...)`,
`LAUNCH_ARGUMENTS["teleop"]`); `launch_graph teleop ...` starts the same graph without ROS tooling.
"""

from koch_bringup.launch_actions import launch_description


def generate_launch_description():
    return launch_description("teleop")
