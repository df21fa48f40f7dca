"""Session-wide fixtures for the training tests."""

from __future__ import annotations

import pytest
from synthetic_reach import SyntheticDataset, build_reach_dataset


@pytest.fixture(scope="session")
def reach_dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    """3 episodes x 30 frames, h264 video, built once per test session."""
    return build_reach_dataset(tmp_path_factory.mktemp("lerobot") / "koch_synthetic_reach")
