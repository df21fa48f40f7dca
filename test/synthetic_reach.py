"""Builds a small real LeRobot v3.0 dataset (video features) where the image decides the action.

Each episode puts a red disk somewhere on a light table; the action (leader joints) is a fixed
function of the disk's pixel position, and the state (follower joints) glides toward it. A
policy can only lower its loss on this data by reading the image and the state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Local datasets only: LeRobot must never try the Hugging Face Hub during tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
HEIGHT, WIDTH = 96, 128
FPS = 30
TASK = "reach the red target"


@dataclass(frozen=True)
class SyntheticDataset:
    root: Path
    repo_id: str
    episodes: int
    frames_per_episode: int


def target_joints(u: float, v: float) -> np.ndarray:
    """Leader joint targets (radians) for a disk centred at pixel (u, v)."""
    pan = (u / WIDTH - 0.5) * 1.6
    lift = (v / HEIGHT - 0.5) * 1.2
    return np.array([pan, lift, -0.8 * lift + 0.3, 0.5 * pan, 0.0, 0.4], dtype=np.float32)


def render(u: float, v: float, radius: float = 7.0) -> np.ndarray:
    """Top-down view: light table, red disk at (u, v)."""
    image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:] = (225, 222, 215)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    disk = (cols - u) ** 2 + (rows - v) ** 2 <= radius**2
    image[disk] = (210, 30, 30)
    return image


def build_reach_dataset(
    root: Path, episodes: int = 3, frames_per_episode: int = 30, seed: int = 0, vcodec: str = "h264"
) -> SyntheticDataset:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    repo_id = "test/koch_synthetic_reach"
    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "observation.images.head": {
            "dtype": "video",
            "shape": (HEIGHT, WIDTH, 3),
            "names": ["height", "width", "channels"],
        },
    }
    dataset = LeRobotDataset.create(
        repo_id, fps=FPS, features=features, root=root, robot_type="koch", use_videos=True, vcodec=vcodec
    )
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        u, v = rng.uniform(20, WIDTH - 20), rng.uniform(20, HEIGHT - 20)
        goal = target_joints(u, v)
        image = render(u, v)
        state = np.zeros(6, dtype=np.float32)
        for _ in range(frames_per_episode):
            dataset.add_frame(
                {"observation.state": state.copy(), "action": goal, "observation.images.head": image,
                 "task": TASK}
            )
            state = (state + 0.15 * (goal - state)).astype(np.float32)
        dataset.save_episode()
    dataset.finalize()
    return SyntheticDataset(root, repo_id, episodes, frames_per_episode)
