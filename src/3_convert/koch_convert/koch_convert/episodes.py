"""One bag -> resampled episodes with a quality report each (ROS-free, LeRobot-free).

Per bag: every mapped stream goes into a `StreamBuffer` (the resampler the policy node uses
live); the bag is cut into episodes at marker-topic messages (if the mapping names one); each
episode's frame grid is `t0 + k / fps` from the first time every stream has a fresh sample to
the end of the shortest stream, and each frame takes each stream's value under its `align`
(never a sample from after the frame time). The quality report says per stream how regular
the input was and what the resampler had to do; an episode over the mapping's limits is
refused with the reason instead of being written.

`resample_episodes` reads the whole bag first (marker splits and task topics need it);
`stream_episode` builds a one-episode bag's frames while it is read, through the same
`FrameAssembler` and `EpisodeBuilder`, so the converter can encode them at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from koch_common.feature_mapping import Mapping
from koch_common.resample import Align, FrameAssembler, ResampleReport, Sample, StreamBuffer
from koch_convert.bag_reader import (
    ImageSpill,
    TopicStream,
    ZeroStampFallback,
    iter_messages,
    read_topics,
    require_topics,
)
from koch_convert.extract import ExtractError, JointVector, decoder_for


class ConversionError(ValueError):
    pass


class OutOfOrderStamps(ConversionError):
    """A stream's stamps went backwards while the bag was streamed; reading it whole sorts them."""


@dataclass
class Episode:
    """One episode, resampled: the sample each feature takes at each kept frame time. Built frame by
    frame (`EpisodeBuilder`); the report, skipped head and verdict are set when it is finished."""

    bag: Path
    segment: int  # index of the episode within its bag (marker splits)
    mapping: Mapping
    task: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    times_s: list[float] = field(default_factory=list)  # kept frames, seconds from the bag's reference stamp
    skipped_head_s: float = 0.0  # episode data before the first frame (streams not all fresh yet)
    report: ResampleReport = field(default_factory=lambda: ResampleReport(frames=0))
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> frames left out
    refused: str | None = None  # why the episode violates the mapping's limits, None if it passes
    # feature key -> messages of its topic in the bag stamped with their receive time (zero header stamps)
    receive_stamped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for feature in self.mapping.features:
            self.samples.setdefault(feature.key, [])
        self._decoded: dict[str, tuple[float, np.ndarray]] = {}
        self._decoders = {f.key: decoder_for(f) for f in self.mapping.features}

    def __len__(self) -> int:
        return len(self.times_s)

    @property
    def frame_times_s(self) -> np.ndarray:
        return np.asarray(self.times_s, dtype=np.float64)

    def value(self, key: str, index: int) -> np.ndarray:
        """A feature's value at frame `index`; images are decoded here, once per held image, so an
        episode never holds all its decoded frames in memory."""
        sample = self.samples[key][index]
        if sample.value is None:
            raise ConversionError(f"bag {self.bag}: frame {index} was streamed to the dataset and released")
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

    def release(self, index: int) -> None:
        """Forget frame `index`'s values (a streamed frame, once written), keeping its stamps."""
        for samples in self.samples.values():
            samples[index] = dataclasses.replace(samples[index], value=None)

    def quality(self) -> dict[str, Any]:
        """The JSON-able quality report of this episode."""
        streams = {}
        for name, s in self.report.streams.items():
            stream = asdict(s)
            stream.pop("name")
            stream["align"] = self.mapping.feature(name).stream.align.value
            stream["max_staleness_s"] = self.mapping.feature(name).stream.max_staleness_s
            stream["receive_stamped"] = self.receive_stamped.get(name, 0)
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


def _receive_stamped(mapping: Mapping, fallback: ZeroStampFallback) -> dict[str, int]:
    """Per feature, how many of its topic's messages took their receive time for a zero header stamp."""
    return {f.key: fallback.counts[f.topic] for f in mapping.features}


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


class EpisodeBuilder:
    """An episode taking the frames the shared `FrameAssembler` finalises: a frame where a stream
    under policy `drop` has no usable sample is left out (counted); any other missing stream is a
    gap that refuses the episode. `ready()` while messages are still being pushed, `finish()` once
    all are in, the same code whether the bag was read first or is streamed."""

    def __init__(self, bag: Path, mapping: Mapping, buffers: dict[str, StreamBuffer], segment: int, task: str):
        self.buffers = buffers
        self.assembler = FrameAssembler(buffers, mapping.fps)
        self.episode = Episode(bag=bag, segment=segment, mapping=mapping, task=task)

    def ready(self) -> None:
        self._take(self.assembler.ready())

    def finish(self) -> Episode:
        self._take(self.assembler.finish())
        episode, mapping = self.episode, self.episode.mapping
        window = self.assembler.window
        if window is None:
            spans = {k: (b.first_stamp, b.last_stamp) for k, b in self.buffers.items()}
            raise ConversionError(
                f"bag {episode.bag} (episode {episode.segment}): the streams never all have a fresh sample at "
                f"once (first/last stamps in s from the bag start: {spans}); check the mapping's clock "
                f"({mapping.clock!r}) and max_staleness_s"
            )
        episode.report = self.assembler.report()
        episode.skipped_head_s = window[0] - min(b.first_stamp for b in self.buffers.values())
        episode.refused = episode.refused or _check_limits(mapping, episode)
        return episode

    def _take(self, frames: list[tuple[float, dict[str, Sample | None]]]) -> None:
        episode, features = self.episode, self.episode.mapping.features
        for t, frame in frames:
            missing = [f for f in features if frame[f.key] is None]
            gaps = [f for f in missing if f.stream.align is not Align.DROP]
            if gaps and episode.refused is None:
                f = gaps[0]
                episode.refused = (
                    f"{f.key} ({f.topic}, align {f.stream.align}) has no sample within "
                    f"{f.stream.usable_age_s} s before t={t:.4f} s; raise its tolerance_s or use align hold/drop"
                )
            if missing:
                reason = f"{missing[0].key}: no sample within {missing[0].stream.usable_age_s} s"
                episode.dropped[reason] = episode.dropped.get(reason, 0) + 1
                continue
            episode.times_s.append(float(t))
            for feature in features:
                episode.samples[feature.key].append(frame[feature.key])  # type: ignore[arg-type]


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
    fallback = ZeroStampFallback(mapping.receive_time_topics)
    streams = read_topics(bag, wanted, clock=mapping.clock, optional=extras, lazy=images, spill=spill,
                          zero_stamps=fallback)
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

    episodes: list[Episode] = []
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
        last = min(b.last_stamp for b in buffers.values())
        task = _task(mapping, streams, t_ref_ns, last, bag)
        episodes.append(EpisodeBuilder(bag, mapping, buffers, len(episodes), task).finish())
        episodes[-1].receive_stamped = _receive_stamped(mapping, fallback)
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


def stream_episode(
    bag: Path, mapping: Mapping, spill: ImageSpill | None, on_frame: Callable[[Episode, int], None]
) -> Episode:
    """The one episode of a bag whose mapping has no episode marker topic, resampled while the bag is
    read (a task topic is read first, on its own: a few small messages): `on_frame(episode, index)`
    gets each kept frame as soon as no later message can change it (the converter encodes it then).
    The same buffers, assembler and builder as `resample_episodes`, and so the same frames; the
    verdict comes at the end, after its frames were passed on. A frame's values are released once
    `on_frame` returns, with every message older than it, so memory holds a few images per stream
    rather than the bag's. Raises OutOfOrderStamps when a stream's stamps go
    backwards (header stamps of several publishers on one topic), which only `resample_episodes`
    (the whole bag read, then sorted) handles."""
    if mapping.episode_marker_topic:
        raise ValueError(f"the mapping splits bags at {mapping.episode_marker_topic}; convert with resample_episodes")
    bag = Path(bag)
    streams = {}
    if mapping.task_topic:  # the bag is the episode: its latest task text is the episode's
        require_topics(bag, mapping.topics)  # a missing feature topic is the error to report, not the task
        streams = read_topics(bag, {mapping.task_topic: "std_msgs/msg/String"}, clock=mapping.clock,
                              optional=[mapping.task_topic])
    task = _task(mapping, streams, 0, np.inf, bag)
    consumers: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {}
    for feature in mapping.features:
        consumers.setdefault(feature.topic, []).append((feature.key, _extractor(feature, bag)))
    buffers = {f.key: StreamBuffer(f.stream) for f in mapping.features}
    builder = EpisodeBuilder(bag, mapping, buffers, 0, task)
    images = [f.topic for f in mapping.features if f.is_image]
    passed = 0

    def pass_on() -> None:
        nonlocal passed
        episode = builder.episode
        if passed == len(episode):
            return
        while passed < len(episode):
            on_frame(episode, passed)
            episode.release(passed)
            passed += 1
        # Nothing behind the newest frame is sampled again: memory holds a few images per stream, not the bag's.
        for key, buffer in buffers.items():
            buffer.release_before(episode.samples[key][-1].stamp_s)

    t_ref_ns: int | None = None  # float seconds from the first stamp read keep sub-microsecond resolution
    fallback = ZeroStampFallback(mapping.receive_time_topics)
    messages = iter_messages(bag, mapping.topics, mapping.clock, lazy=images, spill=spill, zero_stamps=fallback)
    for topic, stamp_ns, msg in messages:
        t_ref_ns = stamp_ns if t_ref_ns is None else t_ref_ns
        stamp_s = (stamp_ns - t_ref_ns) / 1e9
        for key, extract in consumers[topic]:
            try:
                value = extract(msg)
            except ExtractError as err:
                raise ConversionError(str(err)) from err
            if not buffers[key].push(stamp_s, value):
                raise OutOfOrderStamps(
                    f"bag {bag}: {topic} is stamped {stamp_s:.6f} s after a message stamped "
                    f"{buffers[key].last_stamp:.6f} s"
                )
        builder.ready()
        pass_on()
    for feature in mapping.features:
        if len(buffers[feature.key]) == 0:
            raise ConversionError(f"bag {bag}: topic {feature.topic} ({feature.key}) has no messages")
    episode = builder.finish()
    episode.receive_stamped = _receive_stamped(mapping, fallback)
    pass_on()
    return episode
