"""The simulated Koch in place of the hardware: MuJoCo physics behind the servo emulator on a pty,
follower driver, rendered head and wrist cameras, robot_state_publisher, optional RViz. Same topics
and services as robot.launch.py, plus the scene (/sim/objects, /sim/task).

    ros2 launch koch_bringup sim.launch.py task:=pick_place rviz:=true

`ros2 launch koch_bringup sim.launch.py --show-args` lists the arguments with their descriptions.
The node graph and the arguments are declared once in koch_bringup.graph (`build("sim", ...)`,
`LAUNCH_ARGUMENTS["sim"]`); `launch_graph sim ...` starts the same graph without ROS tooling.
"""

from koch_bringup.launch_actions import launch_description


def generate_launch_description():
    return launch_description("sim")
