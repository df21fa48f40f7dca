"""Fixtures for the training tests: a small RGB + depth LeRobot dataset (PNG frames, no video)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_reach import JOINTS, SyntheticDataset, target_joints

HEIGHT, WIDTH = 48, 64


def build_rgbd_dataset(root: Path, episodes: int = 3, frames: int = 20, seed: int = 0) -> SyntheticDataset:
    """Reach episodes seen by one RGB camera and one depth camera (target closer = darker).

LeRobot stores image features as RGB files, so depth is a grey image replicated over 3 channels,
as depth cameras' LeRobot datasets usually hold it.
"""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    repo_id = "test/koch_rgbd_reach"
    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "observation.images.head": {"dtype": "image", "shape": (HEIGHT, WIDTH, 3),
                                    "names": ["height", "width", "channels"]},
        "observation.images.head_depth": {"dtype": "image", "shape": (HEIGHT, WIDTH, 3),
                                          "names": ["height", "width", "channels"]},
    }
    dataset = LeRobotDataset.create(repo_id, fps=30, features=features, root=root, robot_type="koch",
                                    use_videos=False)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    for _ in range(episodes):
        u, v = rng.uniform(10, WIDTH - 10), rng.uniform(10, HEIGHT - 10)
        goal = target_joints(u * 2, v * 2)
        disk = (cols - u) ** 2 + (rows - v) ** 2 <= 16
        rgb = np.full((HEIGHT, WIDTH, 3), 220, dtype=np.uint8)
        rgb[disk] = (210, 30, 30)
        depth = np.full((HEIGHT, WIDTH, 3), 200, dtype=np.uint8)
        depth[disk] = 60
        state = np.zeros(6, dtype=np.float32)
        for _ in range(frames):
            dataset.add_frame({"observation.state": state.copy(), "action": goal, "observation.images.head": rgb,
                               "observation.images.head_depth": depth, "task": "reach"})
            state = (state + 0.15 * (goal - state)).astype(np.float32)
        dataset.save_episode()
    dataset.finalize()
    return SyntheticDataset(root, repo_id, episodes, frames)


@pytest.fixture(scope="session")
def rgbd_dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return build_rgbd_dataset(tmp_path_factory.mktemp("lerobot") / "koch_rgbd_reach")
