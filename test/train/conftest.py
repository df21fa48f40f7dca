"""Fixtures for the training tests: a small RGB + depth LeRobot dataset (PNG frames, no video)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_reach import JOINTS, SyntheticDataset, target_joints

HEIGHT, WIDTH = 48, 64
TABLE_MM, TARGET_MM = 450, 380


def build_rgbd_dataset(root: Path, episodes: int = 3, frames: int = 20, seed: int = 0) -> SyntheticDataset:
    """Reach episodes seen by one RGB camera and one depth camera (the target disk 7 cm nearer than the table).

The depth feature is written as the converter writes one: a one-channel uint16 millimetre depth map
(`koch_convert.convert.depth_png`, DEPTH_MAP_INFO, its statistics through lerobot_compat).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from koch_common.image_codec import DEPTH_MAP_INFO
    from koch_convert.convert import depth_png
    from koch_runtime import lerobot_compat

    repo_id = "test/koch_rgbd_reach"
    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "observation.images.head": {"dtype": "image", "shape": (HEIGHT, WIDTH, 3),
                                    "names": ["height", "width", "channels"]},
        "observation.images.head_depth": {"dtype": "image", "shape": (HEIGHT, WIDTH, 1),
                                          "names": ["height", "width", "channels"], "info": dict(DEPTH_MAP_INFO)},
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
        depth = np.full((HEIGHT, WIDTH, 1), TABLE_MM, dtype=np.uint16)
        depth[disk] = TARGET_MM
        state = np.zeros(6, dtype=np.float32)
        with lerobot_compat.depth_map_statistics():
            for _ in range(frames):
                dataset.add_frame({"observation.state": state.copy(), "action": goal, "observation.images.head": rgb,
                                   "observation.images.head_depth": depth_png(depth), "task": "reach"})
                state = (state + 0.15 * (goal - state)).astype(np.float32)
            dataset.save_episode()
    dataset.finalize()
    return SyntheticDataset(root, repo_id, episodes, frames)


@pytest.fixture(scope="session")
def rgbd_dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return build_rgbd_dataset(tmp_path_factory.mktemp("lerobot") / "koch_rgbd_reach")
