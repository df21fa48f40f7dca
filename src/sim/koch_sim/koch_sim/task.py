"""The reach task: a target placed at random on the table, reached when the tcp is close."""

from __future__ import annotations

import math

import numpy as np

from koch_common.kinematics import tcp_position
from koch_common.robot import KinematicsConfig
from koch_sim.sim_config import TaskConfig


def sample_target(rng: np.random.Generator, task: TaskConfig) -> np.ndarray:
    """A target uniformly distributed over the annulus sector in front of the arm."""
    radius = math.sqrt(rng.uniform(task.radius_min**2, task.radius_max**2))
    azimuth = rng.uniform(-task.azimuth_max, task.azimuth_max)
    return np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), task.target_height])


def tcp_distance(joint_positions: np.ndarray, target: np.ndarray, kinematics: KinematicsConfig) -> float:
    return float(np.linalg.norm(tcp_position(joint_positions, kinematics) - target))
