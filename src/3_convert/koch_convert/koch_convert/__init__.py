"""Converts rosbag2 episodes into LeRobot v3.0 datasets on an exact time grid."""
