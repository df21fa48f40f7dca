"""Policy inference node: action chunks as JointTrajectory at 30 Hz through the shared safety layer."""
