"""Teleop plus a recorder of the feature mapping's topics: `ros2 bag record` (ExecuteProcess) into
<bag_root>/episode_NNNN, one bag per launch (episode:=auto takes the next free index), or with
recorder:=node koch_record's recorder, one bag per /recorder/start .. /recorder/stop.

    ros2 launch koch_bringup record.launch.py bag_root:=bags mapping:=mapping/koch_sim.yaml storage:=mcap
    ros2 launch koch_bringup record.launch.py sim:=true recorder:=node bag_root:=bags

`ros2 launch koch_bringup record.launch.py --show-args` lists the arguments with their descriptions.
The node graph and the arguments are declared once in koch_bringup.graph (`build("record", ...)`,
`LAUNCH_ARGUMENTS["record"]`); `launch_graph record ...` starts the same graph without ROS tooling.
"""

from koch_bringup.launch_actions import launch_description


def generate_launch_description():
    return launch_description("record")
