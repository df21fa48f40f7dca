"""Opening the LeRobot dataset the way the policy needs it, and feeding it fast and resumably.

- episodes_to_use + a train/validation split by episode;
- per-sample image resize / crop / augmentation inside the DataLoader workers;
- a batch sampler whose order depends only on (seed, epoch), so a resumed run continues with
  exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

from koch_common.config import ConfigError
from koch_runtime.build import require_features
from koch_runtime.observation import ACTION_KEY, depth_for_policy, is_depth_spec, transform_image
from kuavo_train.augment import AugmentConfig, ImageAugmenter
from kuavo_train.config import DatasetConfig, LoaderConfig
from kuavo_train.frame_cache import CachedFramesDataset


def load_metadata(cfg: DatasetConfig) -> LeRobotDatasetMetadata:
    """The dataset's metadata (features, fps, stats), read from the local folder only."""
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


def select_episodes(total: int, episodes_to_use: int | str | list[int] | None) -> list[int]:
    """Episode indices named by `episodes_to_use` (null, a count, "a:b", or a list), checked."""
    if episodes_to_use is None:
        return list(range(total))
    if isinstance(episodes_to_use, bool):
        raise ConfigError(f"dataset.episodes_to_use: expected a count, 'a:b' or a list, got {episodes_to_use!r}")
    if isinstance(episodes_to_use, int):
        if not 0 < episodes_to_use <= total:
            raise ConfigError(f"dataset.episodes_to_use={episodes_to_use} but the dataset has {total} episodes")
        return list(range(episodes_to_use))
    if isinstance(episodes_to_use, str):
        try:
            start, stop = (int(p) if p.strip() else d for p, d in zip(episodes_to_use.split(":"), (0, total),
                                                                        strict=True))
        except ValueError as exc:
            raise ConfigError(
                f"dataset.episodes_to_use={episodes_to_use!r}: a range must look like 'a:b' (a..b-1)"
            ) from exc
        chosen = list(range(start, stop))
    else:
        chosen = sorted(set(int(e) for e in episodes_to_use))
    bad = [e for e in chosen if not 0 <= e < total]
    if bad or not chosen:
        raise ConfigError(
            f"dataset.episodes_to_use={episodes_to_use!r} selects {'no episodes' if not chosen else bad}; "
            f"valid indices are 0..{total - 1}"
        )
    return chosen


def split_episodes(episodes: list[int], val_episodes: int | list[int], seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) episode lists; validation drawn with `seed` when given as a count."""
    if isinstance(val_episodes, int):
        if val_episodes == 0:
            return list(episodes), []
        if not 0 < val_episodes < len(episodes):
            raise ConfigError(
                f"dataset.val_episodes={val_episodes} must leave training episodes: {len(episodes)} selected"
            )
        val = sorted(random.Random(seed).sample(episodes, val_episodes))
    else:
        val = sorted(set(val_episodes))
        outside = [e for e in val if e not in episodes]
        if outside:
            raise ConfigError(f"dataset.val_episodes {outside} are not among the selected episodes {episodes}")
        if len(val) == len(episodes):
            raise ConfigError("dataset.val_episodes takes every selected episode; none left to train on")
    return [e for e in episodes if e not in val], val


def delta_timestamps_for(
    policy_config: PreTrainedConfig, fps: float, input_keys: Sequence[str]
) -> dict[str, list[float]] | None:
    """Seconds relative to each sample at which LeRobotDataset fetches each feature.

    ACT needs the next `chunk_size` actions; diffusion also n_obs_steps of observation history.
    """
    deltas: dict[str, list[float]] = {}
    if policy_config.action_delta_indices is not None:
        deltas[ACTION_KEY] = [i / fps for i in policy_config.action_delta_indices]
    if policy_config.observation_delta_indices is not None:
        for key in input_keys:
            deltas[key] = [i / fps for i in policy_config.observation_delta_indices]
    return deltas or None


def open_dataset(
    cfg: DatasetConfig,
    policy_config: PreTrainedConfig,
    input_keys: Sequence[str],
    episodes: list[int] | None = None,
    output_dir: str | Path | None = None,
) -> LeRobotDataset:
    """The LeRobotDataset over `episodes` yielding the time windows `policy_config` asks for.

    With `cfg.frame_cache` its video frames come from the decoded-frame cache (built here if it is
    missing or stale), under `cfg.frame_cache_dir` or else `<output_dir>/frame_cache`.
    """
    meta = load_metadata(cfg)
    check_dataset_features(meta, input_keys)
    if episodes is None:
        episodes = select_episodes(meta.total_episodes, cfg.episodes_to_use)
    kwargs: dict[str, Any] = {
        "root": Path(cfg.root).expanduser(),
        "episodes": episodes,
        "delta_timestamps": delta_timestamps_for(policy_config, meta.fps, input_keys),
        "video_backend": cfg.video_backend,
    }
    if cfg.frame_cache and meta.video_keys:
        cache_dir = cfg.frame_cache_dir or (Path(output_dir) / "frame_cache" if output_dir is not None else None)
        if cache_dir is None:
            raise ConfigError("dataset.frame_cache=true needs dataset.frame_cache_dir=<folder> here (no output_dir)")
        return CachedFramesDataset(cfg.repo_id, frame_cache_dir=cache_dir, **kwargs)
    return LeRobotDataset(cfg.repo_id, **kwargs)


class TransformedDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """LeRobotDataset items with camera images resized / cropped / augmented per sample.

    Indexed by (frame index, sample seed): the seed drives the random crop and augmentation so
    they are reproducible in any worker process.
    """

    def __init__(
        self,
        dataset: LeRobotDataset,
        image_transforms: dict[str, dict[str, Any]],
        augment: AugmentConfig | None,
        train: bool,
    ) -> None:
        self.dataset = dataset
        self.image_transforms = image_transforms
        self.train = train
        self.augmenter = ImageAugmenter(augment) if augment is not None and augment.enable and train else None
        self.augment_keys = augment.image_keys if augment is not None else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        index, sample_seed = item if isinstance(item, tuple) else (item, 0)
        sample = self.dataset[index]
        generator = torch.Generator().manual_seed(sample_seed)
        for key, spec in self.image_transforms.items():
            if key not in sample:
                continue
            if is_depth_spec(spec):
                sample[key] = depth_for_policy(sample[key], spec, generator if self.train else None)
                continue
            image = transform_image(sample[key], spec, generator if self.train else None)
            if self.augmenter is not None and spec.get("kind", "rgb") == "rgb" and (
                    self.augment_keys is None or key in self.augment_keys):
                if image.ndim == 4:  # (n_obs_steps, C, H, W): same augmentation over the history
                    state = generator.get_state()
                    frames = []
                    for frame in image:
                        generator.set_state(state)
                        frames.append(self.augmenter(frame, generator))
                    image = torch.stack(frames)
                else:
                    image = self.augmenter(image, generator)
            sample[key] = image
        return sample


class ResumableBatchSampler:
    """Infinite shuffled batches of (index, sample seed); the order depends on (seed, epoch) only.

    `start_epoch` / `start_batch` resume mid-epoch. With several processes (accelerate) each rank
    takes every world_size-th batch of the same global order.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_epoch: int = 0, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        # Shuffled (training): full batches only. In order (validation / evaluation): every frame.
        per_step = batch_size * world_size
        self.batches_per_epoch = n // per_step if shuffle else -(-n // per_step)
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"batch_size {batch_size} x {world_size} process(es) exceeds the dataset's {n} frames; "
                "lower batch_size"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_epoch, self.start_batch = start_epoch, start_batch
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle

    def epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, first = self.start_epoch, self.start_batch
        while True:
            order = self.epoch_order(epoch)
            for b in range(first, self.batches_per_epoch):
                start = (b * self.world_size + self.rank) * self.batch_size
                batch = [(index, hash((self.seed, epoch, start + i)) & 0x7FFFFFFF)
                         for i, index in enumerate(order[start:start + self.batch_size])]
                if batch:
                    yield batch
            epoch, first = epoch + 1, 0

    def __len__(self) -> int:
        return self.batches_per_epoch


def make_loader(
    dataset: TransformedDataset, sampler: ResumableBatchSampler, loader: LoaderConfig, device: str
) -> torch.utils.data.DataLoader:
    workers = loader.num_workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=loader.pin_memory and device.startswith("cuda"),
        persistent_workers=loader.persistent_workers and workers > 0,
        prefetch_factor=loader.prefetch_factor if workers > 0 else None,
        # Its own generator: creating the iterator must not draw from the global RNG, or a resumed
        # run's dropout / diffusion noise would drift from the uninterrupted run's.
        generator=torch.Generator().manual_seed(sampler.seed),
    )


def infinite_batches(
    dataset: LeRobotDataset, batch_size: int, num_workers: int, seed: int,
    cameras: dict[str, dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Shuffled batches forever, reproducible from `seed`; `cameras`: the checkpoint's camera specs
    (resize / crop / depth maps to metres), none: items as the dataset gives them."""
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed)
    yield from make_loader(TransformedDataset(dataset, cameras or {}, None, train=True), sampler,
                           LoaderConfig(num_workers=num_workers), "cpu")
