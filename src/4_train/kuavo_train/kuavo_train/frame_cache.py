"""A decoded-frame cache: decode every video frame once, then read uint8 rows from a memmap.

LeRobotDataset decodes video for every sample inside the DataLoader workers (several ms of CPU per
camera per sample, and each sample re-decodes from the previous key frame). Training visits every
frame many times, so decoding each frame once up front and storing it as uint8 (1 byte per
channel, the same pixels LeRobot's decoder yields) turns each sample's video work into a memory
read. Disk cost: frames x C x H x W bytes per camera.

Layout under the cache folder: one `<video key>.npy` array (N_frames, C, H, W) uint8 per camera,
rows in episode order, and `index.json` (episode -> first row and length, shapes, fps, and a
fingerprint of the dataset). A folder is reused while its fingerprint matches the dataset, and
rebuilt (into a temporary folder, renamed into place) when it does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.datasets.video_utils import decode_video_frames

from koch_common.config import ConfigError
from koch_runtime.lerobot_compat import FrameSourceDataset, clear_video_decoder_cache, load_hf_dataset

CACHE_VERSION = 1
INDEX_FILE = "index.json"
# Frames decoded per call while building: bounds the float32 batch held in memory.
DECODE_CHUNK = 64
# Keep this much disk free beyond the cache itself (checkpoints and logs still need room).
DISK_MARGIN_BYTES = 256 * 1024 * 1024


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """LeRobot's float32 u/255 frames back to the decoder's uint8 values (exact: see the tests)."""
    return torch.round(frames * 255).to(torch.uint8)


def uint8_to_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] with the same operation as LeRobot's decoders (bit-identical result)."""
    return (frames / 255.0).type(torch.float32)


def dataset_fingerprint(dataset: LeRobotDataset, rows: dict[int, list[float]]) -> dict[str, Any]:
    """What the cached pixels depend on: the dataset's identity and its video files' sizes and mtimes."""
    root = Path(dataset.root).resolve()
    videos = {}
    for path in sorted((root / "videos").rglob("*")):
        if path.is_file():
            stat = path.stat()
            videos[str(path.relative_to(root))] = [stat.st_size, stat.st_mtime_ns]
    return {
        "version": CACHE_VERSION,
        "root": str(root),
        "total_frames": int(dataset.meta.info["total_frames"]),
        "total_episodes": int(dataset.meta.info["total_episodes"]),
        "episodes": sorted(rows),
        "video_keys": list(dataset.meta.video_keys),
        # Decoders may differ in the last bit of a pixel; cache what this backend returns.
        "video_backend": dataset.video_backend,
        "videos": videos,
    }


def cache_folder(cache_dir: Path, dataset: LeRobotDataset, rows: dict[int, list[float]]) -> Path:
    """Sub-folder for this (dataset, episode set, backend): train and validation sets get their own.

    Named by identity only (not file mtimes), so a changed dataset rebuilds over its old cache
    instead of leaving it behind.
    """
    identity = json.dumps([str(Path(dataset.root).resolve()), sorted(rows),
                           list(dataset.meta.video_keys), dataset.video_backend])
    return cache_dir / f"{Path(dataset.root).name}-{hashlib.sha1(identity.encode()).hexdigest()[:12]}"


def episode_rows(dataset: LeRobotDataset) -> dict[int, list[float]]:
    """Per selected episode, its frames' timestamps in order (exactly the values LeRobot queries)."""
    table = load_hf_dataset(dataset)
    # float32 tensors -> Python floats, as LeRobot turns them into its video queries.
    episodes = torch.stack(list(table["episode_index"])).tolist()
    timestamps = torch.stack(list(table["timestamp"])).tolist()
    out: dict[int, list[float]] = {}
    for ep, ts in zip(episodes, timestamps, strict=True):
        out.setdefault(int(ep), []).append(ts)
    return out


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class FrameCache:
    """Read access to a built cache; picklable (DataLoader workers) without the arrays.

    Each process opens the memmaps lazily on first use, so forked or spawned workers share the
    page cache instead of copying arrays.
    """

    def __init__(self, folder: Path, index: dict[str, Any], build_s: float = 0.0) -> None:
        self.folder = folder
        self.index = index
        self.fps = float(index["fps"])
        # Seconds spent building in this process (0.0 = an existing cache was reused).
        self.build_s = build_s
        self._episodes = {int(k): v for k, v in index["episodes"].items()}
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {key: np.load(self.folder / spec["file"], mmap_mode="r")
                            for key, spec in self.index["keys"].items()}
        return self._arrays

    def rows(self, ep_idx: int, timestamps: Sequence[float]) -> np.ndarray:
        ep = self._episodes[ep_idx]
        offsets = [round(ts * self.fps) - ep["first_index"] for ts in timestamps]
        if min(offsets) < 0 or max(offsets) >= ep["length"]:
            raise IndexError(f"timestamps {list(timestamps)} fall outside episode {ep_idx} in the frame cache "
                             f"{self.folder}; delete that folder to rebuild it")
        return np.asarray(offsets, dtype=np.int64) + ep["row"]

    def frames(self, key: str, ep_idx: int, timestamps: Sequence[float]) -> torch.Tensor:
        """float32 (T, C, H, W) in [0, 1], as LeRobot's decode_video_frames returns them."""
        rows = self.arrays()[key][self.rows(ep_idx, timestamps)]  # fancy indexing copies: writable
        return uint8_to_frames(torch.from_numpy(rows))


def _plan(dataset: LeRobotDataset, rows: dict[int, list[float]]) -> tuple[dict[str, Any], int]:
    """The index (less fingerprint) and the bytes the arrays will take."""
    fps = float(dataset.fps)
    episodes: dict[str, dict[str, int]] = {}
    row = 0
    for ep, timestamps in sorted(rows.items()):
        first = round(timestamps[0] * fps)
        indices = [round(ts * fps) for ts in timestamps]
        if indices != list(range(first, first + len(timestamps))):
            # Lookups map a timestamp to a row by round(ts * fps); that needs one frame per 1/fps.
            raise ConfigError(
                f"episode {ep} of {dataset.root} has timestamps that are not consecutive multiples of "
                f"1/{fps:g} s, which the frame cache needs; set dataset.frame_cache=false"
            )
        episodes[str(ep)] = {"row": row, "length": len(timestamps), "first_index": first}
        row += len(timestamps)
    keys = {}
    total = 0
    for i, key in enumerate(dataset.meta.video_keys):
        height, width, channels = (int(v) for v in dataset.meta.features[key]["shape"])
        keys[key] = {"file": f"camera{i}.npy", "shape": [row, channels, height, width]}
        total += row * channels * height * width
    return {"fps": fps, "episodes": episodes, "keys": keys}, total


def check_disk_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(_existing_parent(folder)).free
    if needed + DISK_MARGIN_BYTES > free:
        raise ConfigError(
            f"the decoded-frame cache needs {needed / 1e9:.2f} GB (+{DISK_MARGIN_BYTES / 1e9:.2f} GB margin) "
            f"under {folder.parent} but only {free / 1e9:.2f} GB are free; set dataset.frame_cache=false, "
            "free disk space, or point dataset.frame_cache_dir at a disk with room"
        )


def _build(dataset: LeRobotDataset, folder: Path, index: dict[str, Any], rows: dict[int, list[float]]) -> None:
    staging = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for key, spec in index["keys"].items():
            array = np.lib.format.open_memmap(staging / spec["file"], mode="w+", dtype=np.uint8,
                                              shape=tuple(spec["shape"]))
            for ep_str, ep in index["episodes"].items():
                ep_idx = int(ep_str)
                video_path = dataset.root / dataset.meta.get_video_file_path(ep_idx, key)
                from_ts = dataset.meta.episodes[ep_idx][f"videos/{key}/from_timestamp"]
                ts = rows[ep_idx]
                for start in range(0, len(ts), DECODE_CHUNK):
                    # The same call and timestamps LeRobot's video query uses, so the same pixels.
                    query = [from_ts + t for t in ts[start:start + DECODE_CHUNK]]
                    frames = decode_video_frames(video_path, query, dataset.tolerance_s, dataset.video_backend)
                    if tuple(frames.shape[1:]) != tuple(spec["shape"][1:]):
                        raise ConfigError(f"{video_path} decodes to frames of shape {tuple(frames.shape[1:])} but "
                                          f"meta/info.json says {key} is {spec['shape'][1:]} (C, H, W)")
                    array[ep["row"] + start:ep["row"] + start + len(query)] = frames_to_uint8(frames).numpy()
            array.flush()
            del array
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=1), encoding="utf-8")
        # Swap in atomically: a crash leaves the old cache or the new one, never half of one.
        old = folder.parent / f".old-{folder.name}-{os.getpid()}"
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        # Decoders opened here must not leak into forked DataLoader workers (LeRobot warns of segfaults).
        clear_video_decoder_cache()


def open_frame_cache(dataset: LeRobotDataset, cache_dir: Path | str) -> FrameCache:
    """The cache for `dataset`'s episodes under `cache_dir`: reused if it matches, else built now."""
    rows = episode_rows(dataset)  # one pass over the episode/timestamp columns, shared below
    folder = cache_folder(Path(cache_dir).expanduser().resolve(), dataset, rows)
    plan, needed = _plan(dataset, rows)
    index = {**plan, "fingerprint": dataset_fingerprint(dataset, rows)}
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        try:
            existing = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        if existing == json.loads(json.dumps(index)):  # compare as stored (JSON lists, str keys)
            return FrameCache(folder, existing)
    check_disk_space(folder, needed)
    start = time.perf_counter()
    _build(dataset, folder, index, rows)
    return FrameCache(folder, json.loads(index_path.read_text(encoding="utf-8")), time.perf_counter() - start)


class CachedFramesDataset(FrameSourceDataset):
    """A LeRobotDataset whose video frames come from the decoded-frame cache.

    Only where the frames come from differs: everything else (timestamps, padding, history windows)
    is LeRobot's own code, so items are identical to the uncached dataset's.
    """

    def __init__(self, repo_id: str, *, frame_cache_dir: Path | str, **kwargs: Any) -> None:
        super().__init__(repo_id, **kwargs)
        self.frame_cache = open_frame_cache(self, frame_cache_dir)

    def video_frames(self, query_timestamps: dict[str, list[float]], ep_idx: int) -> dict[str, torch.Tensor]:
        return {key: self.frame_cache.frames(key, ep_idx, ts).squeeze(0) for key, ts in query_timestamps.items()}
