"""The decoded-frame cache (dataset.frame_cache): identical items, reuse / rebuild, disk check, training."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from synthetic_reach import FPS, SyntheticDataset
from test_train import cli_args

from koch_common.config import ConfigError
from kuavo_train import frame_cache
from kuavo_train.frame_cache import INDEX_FILE, CachedFramesDataset, frames_to_uint8, uint8_to_frames
from kuavo_train.train import main

pytestmark = [pytest.mark.video, pytest.mark.training]

CAMERA = "observation.images.head"
WRIST = "observation.images.wrist"
EPISODE_FRAMES = 12
# Diffusion-like history (n_obs_steps 2) for the camera and an action chunk; None = ACT-like (no history).
HISTORY = {CAMERA: [-1 / FPS, 0.0], WRIST: [-2 / FPS, -1 / FPS, 0.0], "observation.state": [-1 / FPS, 0.0],
           "action": [i / FPS for i in range(4)]}


@pytest.fixture(scope="module")
def moving_dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    """Two cameras (different sizes) whose every frame differs: a wrong row would show."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path_factory.mktemp("moving") / "two_cameras"
    features = {
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
        CAMERA: {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
        WRIST: {"dtype": "video", "shape": (32, 48, 3), "names": ["height", "width", "channels"]},
    }
    data = LeRobotDataset.create("test/moving", fps=FPS, features=features, root=root, use_videos=True,
                                 vcodec="h264")
    for ep in range(3):
        for k in range(EPISODE_FRAMES):
            frames = {}
            for key, (h, w, _) in ((CAMERA, (48, 64, 3)), (WRIST, (32, 48, 3))):
                image = np.full((h, w, 3), 40 + 60 * ep, dtype=np.uint8)
                image[:, 3 * k:3 * k + 6] = (250, 200, 20)  # a bar that moves 3 px per frame
                frames[key] = image
            value = np.array([ep, k], dtype=np.float32)
            data.add_frame({"observation.state": value, "action": value, **frames, "task": "move"})
        data.save_episode()
    data.finalize()
    return SyntheticDataset(root, "test/moving", 3, EPISODE_FRAMES)


def open_pair(dataset: SyntheticDataset, cache_dir: Path, deltas: dict[str, list[float]] | None,
              episodes: list[int] | None = None) -> tuple[object, CachedFramesDataset]:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    kwargs = {"root": dataset.root, "episodes": episodes, "delta_timestamps": deltas}
    return (LeRobotDataset(dataset.repo_id, **kwargs),
            CachedFramesDataset(dataset.repo_id, frame_cache_dir=cache_dir, **kwargs))


def test_uint8_round_trip_is_exact() -> None:
    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(frames_to_uint8(uint8_to_frames(u)), u)
    assert torch.equal(uint8_to_frames(u), u.type(torch.float32) / 255)  # LeRobot's pyav expression too


@pytest.mark.parametrize("deltas", [None, HISTORY], ids=["act", "history"])
def test_cached_items_equal_lerobot_items_bit_for_bit(
    moving_dataset: SyntheticDataset, tmp_path: Path, deltas: dict[str, list[float]] | None
) -> None:
    # Episodes 0 and 2 only: row offsets of a non-contiguous selection, and padded history at starts / ends.
    plain, cached = open_pair(moving_dataset, tmp_path, deltas, episodes=[0, 2])
    assert len(plain) == len(cached) == 2 * EPISODE_FRAMES
    for index in range(len(plain)):  # every frame, episode firsts and lasts included
        a, b = plain[index], cached[index]
        assert a.keys() == b.keys()
        for key, history in ((CAMERA, 2), (WRIST, 3)):
            assert a[key].dtype == b[key].dtype == torch.float32
            assert a[key].shape == b[key].shape
            assert a[key].shape[0] == history if deltas else a[key].ndim == 3
            assert torch.equal(a[key], b[key]), (index, key)
            if deltas:
                assert torch.equal(a[f"{key}_is_pad"], b[f"{key}_is_pad"])
    # The check can fail: neighbouring frames differ, so a row off by one would not be equal.
    assert not torch.equal(plain[1][CAMERA], plain[2][CAMERA])
    if deltas:  # the first frame's history reaches before the episode: padded (a copy of frame 0)
        assert cached[0][f"{WRIST}_is_pad"].tolist() == [True, True, False]

    # A worker process opens the memmap itself: the pickled cache carries no pixels.
    cached.frame_cache.arrays()
    assert len(pickle.dumps(cached.frame_cache)) < 10_000
    loader_plain = torch.utils.data.DataLoader(plain, batch_size=len(plain), num_workers=0)
    loader_cached = torch.utils.data.DataLoader(cached, batch_size=len(plain), num_workers=1)
    batch_plain, batch_cached = next(iter(loader_plain)), next(iter(loader_cached))
    for key in (CAMERA, WRIST, "action"):
        assert torch.equal(batch_plain[key], batch_cached[key]), key


def test_cache_is_reused_and_rebuilt_when_the_dataset_changes(reach_dataset: SyntheticDataset, tmp_path: Path) -> None:
    data = SyntheticDataset(tmp_path / "data", reach_dataset.repo_id, reach_dataset.episodes,
                            reach_dataset.frames_per_episode)
    shutil.copytree(reach_dataset.root, data.root)
    first = CachedFramesDataset(data.repo_id, root=data.root, frame_cache_dir=tmp_path / "cache")
    index = first.frame_cache.folder / INDEX_FILE
    assert first.frame_cache.build_s > 0
    built_at = index.stat().st_mtime_ns

    again = CachedFramesDataset(data.repo_id, root=data.root, frame_cache_dir=tmp_path / "cache")
    assert again.frame_cache.build_s == 0.0 and index.stat().st_mtime_ns == built_at
    other_episodes = CachedFramesDataset(data.repo_id, root=data.root, episodes=[1],
                                         frame_cache_dir=tmp_path / "cache")
    assert other_episodes.frame_cache.folder != first.frame_cache.folder  # its own cache

    video = next((data.root / "videos").rglob("*.mp4"))
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a re-encoded / replaced video
    rebuilt = CachedFramesDataset(data.repo_id, root=data.root, frame_cache_dir=tmp_path / "cache")
    assert rebuilt.frame_cache.build_s > 0 and index.stat().st_mtime_ns != built_at
    assert rebuilt.frame_cache.folder == first.frame_cache.folder
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_too_little_disk_space_fails_with_the_size_and_the_fix(
    reach_dataset: SyntheticDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(frame_cache.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(ConfigError, match=r"needs 0\.00 GB .* only 0\.00 GB are free.*frame_cache=false.*"
                                          r"frame_cache_dir") as error:
        CachedFramesDataset(reach_dataset.repo_id, root=reach_dataset.root, frame_cache_dir=tmp_path / "cache")
    needed = reach_dataset.episodes * reach_dataset.frames_per_episode * 3 * 96 * 128
    assert f"{needed / 1e9:.2f} GB" in str(error.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_training_with_the_cache_gives_the_uncached_losses_and_resume_reuses_it(
    reach_dataset: SyntheticDataset, tmp_path: Path
) -> None:
    def losses(output_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]

    assert main(cli_args(reach_dataset, tmp_path / "plain")) == 0
    assert main(cli_args(reach_dataset, tmp_path / "cached", "dataset.frame_cache=true")) == 0
    plain, cached = losses(tmp_path / "plain"), losses(tmp_path / "cached")
    # Same pixels, same seed, one process: the very same losses.
    assert [r["loss"] for r in cached] == [r["loss"] for r in plain]
    assert cached[0]["frame_cache_build_s"] > 0 and "frame_cache_build_s" not in cached[1]
    index = next((tmp_path / "cached" / "frame_cache").glob(f"*/{INDEX_FILE}"))
    built_at = index.stat().st_mtime_ns

    assert main(cli_args(reach_dataset, tmp_path / "cached", "dataset.frame_cache=true", "resume=true",
                         "steps=4")) == 0
    resumed = losses(tmp_path / "cached")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert resumed[3]["frame_cache_build_s"] == 0.0 and index.stat().st_mtime_ns == built_at
