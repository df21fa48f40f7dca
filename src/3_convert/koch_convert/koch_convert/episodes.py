"""One bag -> resampled episodes with a quality report each (ROS-free, LeRobot-free).

Per bag: every mapped stream goes into a `StreamBuffer` (the resampler the policy node uses
live); the bag is cut into episodes at marker-topic messages (if the mapping names one); each
episode's frame grid is `t0 + k / fps` from the first time every stream has a fresh sample to
the end of the shortest stream, and each frame takes each stream's value under its policy
(never a sample from after the frame time). The quality report says per stream how regular
the input was and what the resampler had to do; an episode over the mapping's limits is
refused with the reason instead of being written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from koch_common.feature_mapping import Mapping
from koch_common.resample import ResampleReport, Sample, StreamBuffer, common_window, grid, resample_streams
from koch_convert.bag_reader import ImageSpill, TopicStream, read_topics
from koch_convert.extract import ExtractError, JointVector, decoder_for


class ConversionError(ValueError):
    pass


@dataclass
class Episode:
    """One episode, resampled: the sample each feature takes at each kept frame time."""

    bag: Path
    segment: int  # index of the episode within its bag (marker splits)
    mapping: Mapping
    task: str
    frame_times_s: np.ndarray  # kept frames only, seconds from the bag's earliest stamp
    samples: dict[str, list[Sample]]
    skipped_head_s: float  # episode data before the first frame (streams not all fresh yet)
    report: ResampleReport
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> frames left out
    refused: str | None = None  # why the episode violates the mapping's limits, None if it passes

    def __post_init__(self) -> None:
        self._decoded: dict[str, tuple[float, np.ndarray]] = {}
        self._decoders = {f.key: decoder_for(f) for f in self.mapping.features}

    def __len__(self) -> int:
        return len(self.frame_times_s)

    def value(self, key: str, index: int) -> np.ndarray:
        """A feature's value at frame `index`; images are decoded here, once per held image, so an
        episode never holds all its decoded frames in memory."""
        sample = self.samples[key][index]
        decoder = self._decoders[key]
        if decoder is None:
            return sample.value
        cached = self._decoded.get(key)
        if cached is None or cached[0] != sample.stamp_s:
            try:
                cached = (sample.stamp_s, decoder(sample.value))
            except ExtractError as err:
                raise ConversionError(f"bag {self.bag}: {key} at t={sample.stamp_s:.4f} s: {err}") from err
            self._decoded[key] = cached
        return cached[1]

    def frame(self, index: int) -> dict[str, np.ndarray]:
        return {key: self.value(key, index) for key in self.samples}

    def quality(self) -> dict[str, Any]:
        """The JSON-able quality report of this episode."""
        streams = {}
        for name, s in self.report.streams.items():
            stream = asdict(s)
            stream.pop("name")
            stream["policy"] = self.mapping.feature(name).stream.policy
            stream["max_staleness_s"] = self.mapping.feature(name).stream.max_staleness_s
            streams[name] = stream
        return {
            "bag": str(self.bag),
            "segment": self.segment,
            "task": self.task,
            "frames": len(self),
            "grid_frames": self.report.frames,
            "duration_s": len(self) / self.mapping.fps,
            "skipped_head_s": self.skipped_head_s,
            "frames_dropped": dict(self.dropped),
            "streams": streams,
            "refused": self.refused,
        }


def _extractor(feature: Any, bag: Path) -> Callable[[Any], Any]:
    if feature.is_image:
        return lambda msg: msg  # decoded lazily, only for the frames that use it
    return JointVector(feature, f"bag {bag}, topic {feature.topic}")


def _segments(mapping: Mapping, streams: dict[str, TopicStream], t_ref_ns: int) -> list[tuple[float, float]]:
    """[start, end) windows in seconds: the whole bag, or cut at each marker message."""
    if not mapping.episode_marker_topic:
        return [(-np.inf, np.inf)]
    marks = sorted((s - t_ref_ns) / 1e9 for s in streams[mapping.episode_marker_topic].stamps_ns)
    bounds = [-np.inf, *marks, np.inf]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _task(mapping: Mapping, streams: dict[str, TopicStream], t_ref_ns: int, end_s: float, bag: Path) -> str:
    """The latest task-topic message stamped before the episode ends, else the mapping's text."""
    if mapping.task_topic:
        stream = streams[mapping.task_topic]
        pairs = zip(stream.stamps_ns, stream.messages, strict=True)
        texts = [m.data for s, m in pairs if (s - t_ref_ns) / 1e9 <= end_s]
        if texts and texts[-1].strip():
            return texts[-1].strip()
    if not mapping.task:
        raise ConversionError(
            f"bag {bag}: no message on task topic {mapping.task_topic} before the episode ends and no "
            "`task` text in the mapping"
        )
    return mapping.task


def _check_limits(mapping: Mapping, episode: Episode) -> str | None:
    limits = mapping.limits
    grid_frames = max(episode.report.frames, 1)
    if len(episode) < limits.min_frames:
        return f"{len(episode)} frames, fewer than limits.min_frames={limits.min_frames}"
    dropped = sum(episode.dropped.values())
    if dropped / grid_frames > limits.max_dropped_fraction:
        return (
            f"{dropped}/{grid_frames} frames dropped ({episode.dropped}), over "
            f"limits.max_dropped_fraction={limits.max_dropped_fraction}"
        )
    for name, stream in episode.report.streams.items():
        if stream.stale / grid_frames > limits.max_stale_fraction:
            return (
                f"{name}: {stream.stale}/{grid_frames} frames use a sample older than max_staleness_s="
                f"{mapping.feature(name).stream.max_staleness_s} s, over limits.max_stale_fraction="
                f"{limits.max_stale_fraction}"
            )
        if limits.max_gap_s is not None and stream.max_gap_s > limits.max_gap_s:
            return f"{name}: a {stream.max_gap_s:.3f} s gap between messages, over limits.max_gap_s={limits.max_gap_s}"
    return None


def _resample_segment(
    bag: Path, mapping: Mapping, buffers: dict[str, StreamBuffer], segment: int, task: str
) -> Episode:
    window = common_window(buffers)
    if window is None:
        spans = {k: (b.first_stamp, b.last_stamp) for k, b in buffers.items()}
        raise ConversionError(
            f"bag {bag} (episode {segment}): the streams never all have a fresh sample at once "
            f"(first/last stamps in s from the bag start: {spans}); check the mapping's clock "
            f"({mapping.clock!r}) and max_staleness_s"
        )
    frame_times = grid(window[0], window[1], mapping.fps)
    frames, report = resample_streams(buffers, frame_times)
    samples: dict[str, list[Sample]] = {f.key: [] for f in mapping.features}
    kept: list[float] = []
    dropped: dict[str, int] = {}
    refused = None
    for t, frame in zip(frame_times, frames, strict=True):
        missing = [f for f in mapping.features if frame[f.key] is None]
        gaps = [f for f in missing if f.stream.policy != "drop"]
        if gaps and refused is None:
            f = gaps[0]
            refused = (
                f"{f.key} ({f.topic}, policy {f.stream.policy}) has no sample within "
                f"{f.stream.usable_age_s} s before t={t:.4f} s; raise its tolerance_s or use policy hold/drop"
            )
        if missing:
            reason = f"{missing[0].key}: no sample within {missing[0].stream.usable_age_s} s"
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        kept.append(float(t))
        for feature in mapping.features:
            samples[feature.key].append(frame[feature.key])  # type: ignore[arg-type]
    episode = Episode(
        bag=bag,
        segment=segment,
        mapping=mapping,
        task=task,
        frame_times_s=np.asarray(kept, dtype=np.float64),
        samples=samples,
        skipped_head_s=window[0] - min(b.first_stamp for b in buffers.values()),  # type: ignore[type-var]
        report=report,
        dropped=dropped,
    )
    episode.refused = refused or _check_limits(mapping, episode)
    return episode


def resample_episodes(bag: Path, mapping: Mapping, spill: ImageSpill | None = None) -> list[Episode]:
    """Every episode of one bag (one, or one per marker-delimited segment), refused ones included.
    `spill`: where image messages beyond a memory budget wait for their frames (default: all in memory)."""
    bag = Path(bag)
    wanted: dict[str, str | None] = dict(mapping.topics)
    extras = mapping.extra_topics
    for extra in extras:
        wanted.setdefault(extra, None)
    # A bag without markers is one episode; without task messages it takes the mapping's text.
    images = [f.topic for f in mapping.features if f.is_image]  # deserialized only for the frames that use them
    streams = read_topics(bag, wanted, clock=mapping.clock, optional=extras, lazy=images, spill=spill)
    feature_streams = [streams[f.topic] for f in mapping.features]
    for feature, stream in zip(mapping.features, feature_streams, strict=True):
        if not stream.stamps_ns:
            raise ConversionError(f"bag {bag}: topic {feature.topic} ({feature.key}) has no messages")
    # Seconds from the bag's earliest stamp, so float seconds keep sub-microsecond resolution.
    t_ref_ns = min(s.stamps_ns[0] for s in feature_streams)
    values: dict[str, tuple[np.ndarray, list[Any]]] = {}
    for feature in mapping.features:
        stream = streams[feature.topic]
        extract = _extractor(feature, bag)
        try:
            extracted = [extract(msg) for msg in stream.messages]
        except ExtractError as err:
            raise ConversionError(str(err)) from err
        values[feature.key] = ((np.asarray(stream.stamps_ns) - t_ref_ns) / 1e9, extracted)

    episodes = []
    for segment, (start, end) in enumerate(_segments(mapping, streams, t_ref_ns)):
        buffers: dict[str, StreamBuffer] = {}
        for feature in mapping.features:
            stamps, items = values[feature.key]
            buffer = StreamBuffer(feature.stream)
            for i in np.flatnonzero((stamps >= start) & (stamps < end)):
                buffer.push(float(stamps[i]), items[i])
            buffers[feature.key] = buffer
        if any(len(b) == 0 for b in buffers.values()):
            if mapping.episode_marker_topic and segment == 0:
                continue  # nothing recorded before the first marker: no episode there
            empty = [k for k, b in buffers.items() if len(b) == 0]
            raise ConversionError(f"bag {bag}: episode {segment} has no messages for {empty}")
        last = min(b.last_stamp for b in buffers.values())  # type: ignore[type-var]
        task = _task(mapping, streams, t_ref_ns, last, bag)
        episodes.append(_resample_segment(bag, mapping, buffers, len(episodes), task))
    if not episodes:
        raise ConversionError(f"bag {bag}: no episode has messages on every mapped topic")
    return episodes


def resample_bag(bag: Path, mapping: Mapping) -> Episode:
    """The one episode of a bag (mappings without an episode marker topic)."""
    episodes = resample_episodes(bag, mapping)
    if len(episodes) != 1:
        raise ConversionError(f"bag {bag} holds {len(episodes)} episodes (marker splits); use resample_episodes")
    if episodes[0].refused and not len(episodes[0]):
        raise ConversionError(f"bag {bag}: {episodes[0].refused}")
    return episodes[0]
