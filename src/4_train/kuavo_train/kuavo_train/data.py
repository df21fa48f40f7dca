"""Opening the LeRobot dataset the way the policy needs it (action chunks via delta_timestamps)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from koch_common.config import ConfigError
from koch_common.policy_runtime import ACTION_KEY, require_features
from kuavo_train.config import DatasetConfig

if TYPE_CHECKING:
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata


def load_metadata(cfg: DatasetConfig) -> LeRobotDatasetMetadata:
    """The dataset's metadata (features, fps, stats), read from the local folder only."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    root = Path(cfg.root).expanduser()
    if not (root / "meta" / "info.json").is_file():
        # Without this check LeRobot would try to download `repo_id` from the Hugging Face Hub.
        raise ConfigError(
            f"dataset.root {root} is not a LeRobot dataset (no meta/info.json); convert the recorded "
            "bags first or set dataset.root=<folder holding meta/info.json>"
        )
    meta = LeRobotDatasetMetadata(cfg.repo_id, root=root)
    if meta.stats is None:
        raise ConfigError(f"dataset {root} has no meta/stats.json; it was not finalized when written")
    return meta


def check_dataset_features(meta: LeRobotDatasetMetadata, input_keys: Sequence[str]) -> None:
    """Raise a ConfigError naming any input feature (or the action) the dataset lacks."""
    require_features(meta.features, [*input_keys, ACTION_KEY])


def delta_timestamps_for(
    policy_config: PreTrainedConfig, fps: float, input_keys: Sequence[str]
) -> dict[str, list[float]] | None:
    """Seconds relative to each sample at which LeRobotDataset fetches each feature.

    ACT needs the next `chunk_size` actions: action_delta_indices = 0..chunk_size-1.
    """
    deltas: dict[str, list[float]] = {}
    if policy_config.action_delta_indices is not None:
        deltas[ACTION_KEY] = [i / fps for i in policy_config.action_delta_indices]
    if policy_config.observation_delta_indices is not None:
        for key in input_keys:
            deltas[key] = [i / fps for i in policy_config.observation_delta_indices]
    return deltas or None


def open_dataset(
    cfg: DatasetConfig, policy_config: PreTrainedConfig, input_keys: Sequence[str]
) -> LeRobotDataset:
    """The LeRobotDataset yielding samples with the time windows `policy_config` asks for."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    meta = load_metadata(cfg)
    check_dataset_features(meta, input_keys)
    return LeRobotDataset(
        cfg.repo_id,
        root=Path(cfg.root).expanduser(),
        episodes=cfg.episodes,
        delta_timestamps=delta_timestamps_for(policy_config, meta.fps, input_keys),
        video_backend=cfg.video_backend,
    )


def infinite_batches(
    dataset: LeRobotDataset, batch_size: int, num_workers: int, seed: int
) -> Iterator[dict[str, Any]]:
    """Shuffled batches forever; a new shuffle each pass, reproducible from `seed`."""
    import torch

    if len(dataset) < batch_size:
        raise ConfigError(
            f"batch_size {batch_size} exceeds the dataset's {len(dataset)} frames; lower batch_size"
        )
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=generator,
    )
    while True:
        yield from loader
