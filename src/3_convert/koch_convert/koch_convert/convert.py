"""rosbag2 episodes -> a LeRobot v3.0 dataset, one episode per bag, on an exact time grid.

Per bag: every mapped stream goes into a `StreamBuffer` (the resampler the policy node
uses live), the frame grid is `t0 + k / fps` from the first time every stream has a fresh
sample to the end of the shortest stream, and each frame takes each stream's value under
its policy (never a sample from after the frame time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from koch_common.feature_mapping import Feature, Mapping
from koch_common.image_codec import from_fields, to_rgb
from koch_common.resample import ResampleReport, Sample, StreamBuffer, common_window, grid, resample_streams
from koch_convert.bag_reader import TopicStream, read_topics


class ConversionError(ValueError):
    pass


@dataclass
class EpisodeSummary:
    bag: Path
    episode_index: int
    frames: int
    duration_s: float
    skipped_head_s: float  # bag data before the first frame (streams not all fresh yet)
    report: ResampleReport


@dataclass
class Episode:
    """One bag, resampled: the sample each feature takes at each frame time."""

    bag: Path
    mapping: Mapping
    frame_times_s: np.ndarray
    samples: dict[str, list[Sample]]
    skipped_head_s: float
    report: ResampleReport

    def __post_init__(self) -> None:
        self._decoded: dict[str, tuple[float, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.frame_times_s)

    def value(self, key: str, index: int) -> np.ndarray:
        """A feature's value at frame `index`; images are decoded here, once per held image, so an
        episode never holds all its decoded frames in memory."""
        sample = self.samples[key][index]
        if not self.mapping.feature(key).is_image:
            return sample.value
        cached = self._decoded.get(key)
        if cached is None or cached[0] != sample.stamp_s:
            cached = (sample.stamp_s, decode_image(sample.value))
            self._decoded[key] = cached
        return cached[1]

    def frame(self, index: int) -> dict[str, np.ndarray]:
        return {key: self.value(key, index) for key in self.samples}


class JointReorder:
    """JointState.position in the mapping's joint order, whatever order the publisher used."""

    def __init__(self, feature: Feature, topic: str, bag: Path) -> None:
        self.feature = feature
        self.where = f"bag {bag}, topic {topic}"
        self._index_cache: dict[tuple[str, ...], np.ndarray] = {}

    def __call__(self, msg: Any) -> np.ndarray:
        names = tuple(msg.name)
        index = self._index_cache.get(names)
        if index is None:
            missing = [j for j in self.feature.joint_names if j not in names]
            if missing:
                raise ConversionError(
                    f"{self.where}: JointState lacks joint(s) {missing} needed by {self.feature.key}; "
                    f"it has {list(names)}. Fix the mapping's joints or the publisher."
                )
            index = np.array([names.index(j) for j in self.feature.joint_names])
            self._index_cache[names] = index
        position = np.asarray(msg.position, dtype=np.float64)
        if position.shape[0] != len(names):
            raise ConversionError(f"{self.where}: {len(names)} names but {position.shape[0]} positions")
        return position[index].astype(np.float32)


def decode_image(msg: Any) -> np.ndarray:
    array = from_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
    return to_rgb(array, msg.encoding)


def _buffers(bag: Path, mapping: Mapping, streams: dict[str, TopicStream]) -> dict[str, StreamBuffer]:
    """A StreamBuffer per feature with stamps in seconds from the bag's earliest stamp (so float
    seconds keep sub-microsecond resolution). Joint vectors are extracted now; images stay
    messages and are decoded only for the frames that use them."""
    t_ref_ns = min(s.stamps_ns[0] for s in streams.values() if s.stamps_ns)
    buffers: dict[str, StreamBuffer] = {}
    for feature in mapping.features:
        stream = streams[feature.topic]
        if not stream.stamps_ns:
            raise ConversionError(f"bag {bag}: topic {feature.topic} ({feature.key}) has no messages")
        extract: Callable[[Any], Any] = (
            (lambda msg: msg) if feature.is_image else JointReorder(feature, feature.topic, bag)
        )
        buffer = StreamBuffer(feature.stream)
        for stamp_ns, msg in zip(stream.stamps_ns, stream.messages, strict=True):
            buffer.push((stamp_ns - t_ref_ns) / 1e9, extract(msg))
        buffers[feature.key] = buffer
    return buffers


def resample_bag(bag: Path, mapping: Mapping) -> Episode:
    streams = read_topics(bag, mapping.topics, clock=mapping.clock)
    if all(not s.stamps_ns for s in streams.values()):
        raise ConversionError(f"bag {bag}: none of the mapped topics has messages")
    buffers = _buffers(bag, mapping, streams)
    window = common_window(buffers)
    if window is None:
        spans = {k: (b.first_stamp, b.last_stamp) for k, b in buffers.items()}
        raise ConversionError(
            f"bag {bag}: the streams never all have a fresh sample at once "
            f"(first/last stamps in s from the bag start: {spans}); check the mapping's clock "
            f"({mapping.clock!r}) and max_staleness_s"
        )
    frame_times = grid(window[0], window[1], mapping.fps)
    frames, report = resample_streams(buffers, frame_times)
    samples: dict[str, list[Sample]] = {f.key: [] for f in mapping.features}
    for t, frame in zip(frame_times, frames, strict=True):
        for feature in mapping.features:
            sample = frame[feature.key]
            if sample is None:
                raise ConversionError(
                    f"bag {bag}: {feature.key} ({feature.topic}, policy {feature.stream.policy}) has no "
                    f"sample within {feature.stream.max_staleness_s} s before t={t:.4f} s; "
                    "raise max_staleness_s or use policy: hold"
                )
            samples[feature.key].append(sample)
    return Episode(
        bag=bag,
        mapping=mapping,
        frame_times_s=frame_times,
        samples=samples,
        skipped_head_s=window[0],
        report=report,
    )


def dataset_features(mapping: Mapping, first: Episode) -> dict[str, dict[str, Any]]:
    features: dict[str, dict[str, Any]] = {}
    for feature in mapping.features:
        if feature.is_image:
            height, width, channels = first.value(feature.key, 0).shape
            features[feature.key] = {
                "dtype": "video",
                "shape": (height, width, channels),
                "names": ["height", "width", "channels"],
            }
        else:
            names = list(feature.joint_names)
            features[feature.key] = {"dtype": "float32", "shape": (len(names),), "names": names}
    return features


def _check_shapes(
    episode: Episode, frame: dict[str, np.ndarray], features: dict[str, dict[str, Any]]
) -> None:
    for key, value in frame.items():
        expected = tuple(features[key]["shape"])
        if value.shape != expected:
            raise ConversionError(
                f"bag {episode.bag}: {key} has shape {value.shape} but the dataset's first episode "
                f"set {expected}; convert bags of different camera resolutions into separate datasets"
            )


def convert_bags(
    bag_dirs: Sequence[Path],
    mapping: Mapping,
    output_root: Path,
    repo_id: str,
    vcodec: str = "libsvtav1",
    overwrite: bool = False,
    progress: bool = False,
    on_episode: Callable[[EpisodeSummary], None] | None = None,
) -> Path:
    """Convert bags (one episode each, in the given order) into a LeRobot v3.0 dataset at
    `output_root`. The dataset is built next to it and moved into place only when complete."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # heavy import, only when converting

    if not bag_dirs:
        raise ConversionError("no bags to convert; pass at least one rosbag2 directory")
    output_root = Path(output_root)
    if output_root.exists() and not overwrite:
        raise ConversionError(f"{output_root} already exists; choose another --output or pass --overwrite")
    output_root.parent.mkdir(parents=True, exist_ok=True)
    staging = output_root.parent / f".{output_root.name}.converting-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)

    dataset = None
    try:
        for index, bag in enumerate(tqdm(bag_dirs, desc="bags", unit="bag", disable=not progress)):
            episode = resample_bag(Path(bag), mapping)
            if not len(episode):
                raise ConversionError(f"bag {bag}: the streams overlap for less than one frame")
            if dataset is None:
                features = dataset_features(mapping, episode)
                dataset = LeRobotDataset.create(
                    repo_id=repo_id,
                    fps=mapping.fps,
                    features=features,
                    root=staging,
                    robot_type="koch",
                    use_videos=True,
                    vcodec=vcodec,
                )
            frame_count = len(episode)
            for i in tqdm(range(frame_count), desc=f"episode {index}", leave=False, disable=not progress):
                frame = episode.frame(i)
                _check_shapes(episode, frame, features)
                dataset.add_frame({**frame, "task": mapping.task})
            dataset.save_episode()
            if on_episode is not None:
                on_episode(
                    EpisodeSummary(
                        bag=Path(bag),
                        episode_index=index,
                        frames=frame_count,
                        duration_s=frame_count / mapping.fps,
                        skipped_head_s=episode.skipped_head_s,
                        report=episode.report,
                    )
                )
        assert dataset is not None
        dataset.finalize()
    except BaseException:
        # Close lerobot's parquet writers first: left to the garbage collector they would write
        # their footers into the staging directory after it was removed.
        if dataset is not None:
            with contextlib.suppress(Exception):
                dataset.finalize()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    dataset = None  # nothing may touch the staging directory once it is renamed

    if output_root.exists():
        retired = output_root.parent / f".{output_root.name}.replaced-{os.getpid()}"
        output_root.rename(retired)
        staging.rename(output_root)
        shutil.rmtree(retired)
    else:
        staging.rename(output_root)
    return output_root
