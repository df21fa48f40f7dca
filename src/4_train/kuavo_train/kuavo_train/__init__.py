"""Offline policy training on LeRobot datasets with the same policy code as the robot."""
