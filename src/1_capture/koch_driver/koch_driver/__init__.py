"""Dynamixel Protocol 2.0 joint driver and teleoperation for Koch arms."""
