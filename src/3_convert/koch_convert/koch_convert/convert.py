"""rosbag2 episodes -> a LeRobot v3.0 dataset, safely.

Each bag is converted on its own (in worker processes when `jobs > 1`; a one-episode bag is
streamed, its frames encoded while it is read) into a small LeRobot dataset in a work folder
beside the output; LeRobot's `aggregate_datasets` then joins them, after the existing dataset
when appending, into a staging dataset that is moved into place
only when everything succeeded. A bag that cannot be read, or any crash, leaves the existing
dataset untouched (the work folder is removed); an episode that violates the mapping's
quality limits is refused, reported and not written. `quality_report.json` beside the data
(in the dataset root) lists every episode converted or refused, with the reason.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from koch_common.feature_mapping import Mapping
from koch_common.resample import ResampleReport, StreamReport
from koch_convert.bag_reader import ImageSpill
from koch_convert.episodes import (
    ConversionError,
    Episode,
    OutOfOrderStamps,
    resample_bag,
    resample_episodes,
    stream_episode,
)

__all__ = [
    "ConversionError",
    "Episode",
    "EpisodeSummary",
    "QUALITY_REPORT",
    "convert_bags",
    "dataset_features",
    "resample_bag",
    "resample_episodes",
]

QUALITY_REPORT = "quality_report.json"
IMAGE_MEMORY_GB = 4.0  # per bag being converted (so per --jobs process)


@dataclass
class EpisodeSummary:
    bag: Path
    episode_index: int  # index in the output dataset; -1 for a refused episode
    frames: int
    duration_s: float
    skipped_head_s: float  # bag data before the first frame (streams not all fresh yet)
    report: ResampleReport
    refused: str | None = None
    quality: dict[str, Any] | None = None


def dataset_features(mapping: Mapping, first: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The LeRobot features of a dataset whose first frame (feature key -> decoded value) is `first`."""
    features: dict[str, dict[str, Any]] = {}
    for feature in mapping.features:
        if feature.is_color:
            height, width, channels = first[feature.key].shape
            features[feature.key] = {
                "dtype": "video",
                "shape": (height, width, channels),
                "names": ["height", "width", "channels"],
            }
        elif feature.is_depth:
            # Lossless: float32 metres as a plain array column (video codecs quantise depth),
            # flattened because LeRobot 0.4.4's aggregate_datasets cannot write multi-dimensional
            # array columns; `info.image_shape` says how to reshape it.
            height, width, _ = first[feature.key].shape
            features[feature.key] = {
                "dtype": "float32",
                "shape": (height * width,),
                "names": None,
                "info": {"image_shape": [height, width, 1], "unit": "m", "layout": "row-major"},
            }
        else:
            names = list(feature.joint_names)
            features[feature.key] = {"dtype": "float32", "shape": (len(names),), "names": names}
    return features


def _check_shapes(episode: Episode, frame: dict[str, Any], features: dict[str, dict[str, Any]]) -> None:
    for key, value in frame.items():
        info = features[key].get("info") or {}
        expected = tuple(info.get("image_shape", features[key]["shape"]))
        if value.shape != expected:
            raise ConversionError(
                f"bag {episode.bag}: {key} has shape {value.shape} but the dataset's first episode "
                f"set {expected}; convert bags of different camera resolutions into separate datasets"
            )


def convert_one_bag(
    bag: Path, mapping: Mapping, root: Path, repo_id: str, vcodec: str, image_memory_gb: float = IMAGE_MEMORY_GB,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Convert one bag into a LeRobot dataset at `root` (created only if an episode passes).
    Image messages beyond `image_memory_gb` wait for their frames in a spill file beside `root`.
    Returns the quality report of each of its episodes (refused ones included).

    A bag that is one episode with the mapping's task text (no marker or task topic) is streamed:
    each frame is encoded as soon as no later message can change it, while the bag is still read,
    and the episode is discarded if its verdict at the end refuses it. Otherwise, or when a stream's
    stamps go backwards (only sorting the whole bag puts them in order), the bag is read first."""
    budget = int(image_memory_gb * 2**30)
    if not mapping.extra_topics:
        try:
            return [_stream_one_bag(bag, mapping, root, repo_id, vcodec, ImageSpill(root.parent, budget), progress)]
        except OutOfOrderStamps:
            shutil.rmtree(root, ignore_errors=True)  # the frames streamed so far; convert from the sorted bag
    episodes = resample_episodes(bag, mapping, ImageSpill(root.parent, budget))
    accepted = [e for e in episodes if e.refused is None]
    if accepted:
        with _DatasetWriter(mapping, root, repo_id, vcodec) as writer:
            for episode in accepted:
                for i in tqdm(range(len(episode)), desc=episode.bag.name, leave=False, disable=not progress):
                    writer.add_frame(episode, i)
                writer.save_episode()
    return [e.quality() for e in episodes]


def _stream_one_bag(
    bag: Path, mapping: Mapping, root: Path, repo_id: str, vcodec: str, spill: ImageSpill, progress: bool
) -> dict[str, Any]:
    with (
        _DatasetWriter(mapping, root, repo_id, vcodec) as writer,
        tqdm(desc=Path(bag).name, unit="frame", leave=False, disable=not progress) as bar,
    ):
        def on_frame(episode: Episode, index: int) -> None:
            if episode.refused is None:  # after a gap the episode is refused: stop encoding it
                writer.add_frame(episode, index)
                bar.update()

        episode = stream_episode(bag, mapping, spill, on_frame)
        if episode.refused is None:
            writer.save_episode()
    if episode.refused is not None:
        shutil.rmtree(root, ignore_errors=True)  # its frames were encoded before the verdict
    return episode.quality()


class _DatasetWriter:
    """A new LeRobot dataset at `root`, created with the first frame written (its features come
    from that frame's shapes); frames go straight into one video encoder per camera."""

    def __init__(self, mapping: Mapping, root: Path, repo_id: str, vcodec: str) -> None:
        self.mapping, self.root, self.repo_id, self.vcodec = mapping, root, repo_id, vcodec
        self.dataset: Any = None
        self.features: dict[str, dict[str, Any]] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _DatasetWriter:
        self._stack.enter_context(_embedding_only_for_image_columns())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            # Always close lerobot's parquet writers and encoders: left to the garbage collector they
            # would write their footers into the work folder after it was removed.
            if self.dataset is not None:
                self.dataset.finalize()
        finally:
            self._stack.close()

    def add_frame(self, episode: Episode, index: int) -> None:
        frame = episode.frame(index)
        if self.dataset is None:
            self._create(frame)
        _check_shapes(episode, frame, self.features)
        for feature in self.mapping.features:
            if feature.is_depth:
                frame[feature.key] = frame[feature.key].reshape(-1)
        self.dataset.add_frame({**frame, "task": episode.task})

    def save_episode(self) -> None:
        self.dataset.save_episode()

    def _create(self, first: dict[str, np.ndarray]) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset  # heavy import, only when converting

        self.features = dataset_features(self.mapping, first)
        self.dataset = LeRobotDataset.create(
            repo_id=self.repo_id,
            fps=self.mapping.fps,
            features=self.features,
            root=self.root,
            robot_type="koch",
            use_videos=any(f.is_color for f in self.mapping.features),
            vcodec=self.vcodec,
            # Frames go straight into one encoder per camera (LeRobot's streaming encoder, which also
            # computes the image statistics) instead of PNG files that save_episode reads back.
            streaming_encoding=True,
        )
        if self.dataset._streaming_encoder is not None:
            self.dataset._streaming_encoder = lossless_encoder(self.dataset._streaming_encoder)


@contextlib.contextmanager
def _embedding_only_for_image_columns() -> Iterator[None]:
    """LeRobot's save_episode runs `embed_images`, a per-row `datasets.map` that copies image files
    into the table, on every episode: about 1 s of CPU per 300 frames even when, as here, there is
    no image column (images are videos, depth a float column). On a busy host that second comes out
    of the video encoders' share; skip the pass when no column has anything to embed."""
    import lerobot.datasets.lerobot_dataset as lerobot_dataset

    embed_images = lerobot_dataset.embed_images

    def embed_when_needed(dataset: Any) -> Any:
        return embed_images(dataset) if _needs_embedding(dataset.features) else dataset

    lerobot_dataset.embed_images = embed_when_needed
    try:
        yield
    finally:
        lerobot_dataset.embed_images = embed_images


def _needs_embedding(feature: Any) -> bool:
    """True if a (nested) `datasets` feature stores files that `embed_table_storage` would embed."""
    if isinstance(feature, dict):
        return any(_needs_embedding(f) for f in feature.values())
    inner = getattr(feature, "feature", None)  # List / LargeList / Sequence
    return _needs_embedding(inner) if inner is not None else hasattr(feature, "embed_storage")


def lossless_encoder(encoder: Any) -> Any:
    """LeRobot's streaming encoder with the same settings, but one that never drops a frame and
    does not copy it.

    It was written for live capture, where a full queue means the camera must not wait: after
    0.1 s it drops the frame and logs a warning. Offline there is no deadline, and a dropped frame
    would leave the video shorter than the parquet rows, so the converter waits instead. It also
    copies every frame in case a camera driver reuses its buffer (0.6 ms per 640x480 image on the
    thread that feeds three encoders); the converter's frames are fresh arrays over message bytes
    that nothing writes, so they are queued as they are.
    """
    import queue

    from lerobot.datasets.video_utils import StreamingVideoEncoder

    class LosslessStreamingEncoder(StreamingVideoEncoder):
        def feed_frame(self, video_key: str, image: np.ndarray) -> None:
            if not self._episode_active:
                raise RuntimeError("no active episode: call start_episode() first")
            frame = np.ascontiguousarray(image)
            while True:
                if not self._threads[video_key].is_alive():
                    raise RuntimeError(f"the video encoder for {video_key} stopped; see the log above")
                try:
                    self._frame_queues[video_key].put(frame, timeout=0.5)
                    return
                except queue.Full:
                    continue

    return LosslessStreamingEncoder(
        fps=encoder.fps, vcodec=encoder.vcodec, pix_fmt=encoder.pix_fmt, g=encoder.g, crf=encoder.crf,
        preset=encoder.preset, queue_maxsize=encoder.queue_maxsize, encoder_threads=encoder.encoder_threads,
    )


def _worker(args: tuple[Path, Mapping, Path, str, str, float]) -> list[dict[str, Any]]:
    return convert_one_bag(*args)


def _summaries(reports: list[dict[str, Any]], first_index: int, fps: int) -> list[EpisodeSummary]:
    out = []
    index = first_index
    for quality in reports:
        streams = {}
        for name, s in quality["streams"].items():
            fields = {k: v for k, v in s.items() if k not in ("policy", "max_staleness_s")}
            streams[name] = StreamReport(name=name, **fields)
        report = ResampleReport(frames=quality["grid_frames"], streams=streams)
        accepted = quality["refused"] is None
        out.append(
            EpisodeSummary(
                bag=Path(quality["bag"]),
                episode_index=index if accepted else -1,
                frames=quality["frames"],
                duration_s=quality["frames"] / fps,
                skipped_head_s=quality["skipped_head_s"],
                report=report,
                refused=quality["refused"],
                quality=quality,
            )
        )
        index += int(accepted)
    return out


def _existing_report(root: Path) -> list[dict[str, Any]]:
    path = root / QUALITY_REPORT
    return json.loads(path.read_text())["episodes"] if path.is_file() else []


def convert_bags(
    bag_dirs: Sequence[Path],
    mapping: Mapping,
    output_root: Path,
    repo_id: str,
    vcodec: str = "libsvtav1",
    overwrite: bool = False,
    progress: bool = False,
    on_episode: Callable[[EpisodeSummary], None] | None = None,
    append: bool = False,
    jobs: int = 1,
    image_memory_gb: float = IMAGE_MEMORY_GB,
) -> Path:
    """Convert bags (one or more episodes each, in the given order) into the LeRobot v3.0 dataset
    at `output_root`, or append them to it (`append=True`). Nothing at `output_root` changes
    unless every bag was read and converted (refused episodes are reported, not written)."""
    from lerobot.datasets.aggregate import aggregate_datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    if not bag_dirs:
        raise ConversionError("no bags to convert; pass at least one rosbag2 directory")
    if overwrite and append:
        raise ConversionError("choose either overwrite or append, not both")
    if jobs < 1:
        raise ConversionError(f"jobs must be >= 1, got {jobs}")
    if image_memory_gb < 0:
        raise ConversionError(f"image_memory_gb must be >= 0, got {image_memory_gb}")
    output_root = Path(output_root)
    exists = output_root.exists()
    if exists and not (overwrite or append):
        raise ConversionError(
            f"{output_root} already exists; choose another --output, --append to add episodes, or --overwrite"
        )
    if append and exists:
        try:
            existing = LeRobotDatasetMetadata(repo_id, root=output_root)
        except Exception as err:
            raise ConversionError(f"cannot append: {output_root} is not a readable LeRobot dataset ({err})") from err
        if existing.fps != mapping.fps:
            raise ConversionError(f"cannot append: {output_root} has fps {existing.fps}, the mapping {mapping.fps}")
    append = append and exists
    output_root.parent.mkdir(parents=True, exist_ok=True)
    work = output_root.parent / f".{output_root.name}.converting-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    try:
        bags = [Path(b) for b in bag_dirs]
        tasks = [(bag, mapping, work / "bags" / f"{i:05d}", repo_id, vcodec, image_memory_gb)
                 for i, bag in enumerate(bags)]
        results: list[list[dict[str, Any]] | None] = [None] * len(bags)
        bar = tqdm(total=len(bags), desc="bags", unit="bag", disable=not progress)
        if jobs == 1 or len(bags) == 1:
            for i, task in enumerate(tasks):
                results[i] = _worker(task)
                bar.update()
        else:
            # spawn, not fork: the parent may hold threads (tqdm, torch) that fork would copy broken.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(jobs, len(bags)), mp_context=context) as pool:
                futures = {pool.submit(_worker, task): i for i, task in enumerate(tasks)}
                try:
                    for future in concurrent.futures.as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        bar.close()

        first_index = LeRobotDatasetMetadata(repo_id, root=output_root).total_episodes if append else 0
        summaries: list[EpisodeSummary] = []
        for reports in results:
            summaries += _summaries(reports or [], first_index + sum(s.refused is None for s in summaries), mapping.fps)
        sources = [task[2] for task in tasks if task[2].exists()]
        if not sources:
            reasons = "; ".join(f"{s.bag.name}: {s.refused}" for s in summaries)
            raise ConversionError(f"every episode was refused, nothing to write: {reasons}")
        if append:
            sources.insert(0, output_root)
        staging = work / "dataset"
        if len(sources) == 1:
            shutil.copytree(sources[0], staging) if append else sources[0].rename(staging)
        else:
            aggregate_datasets([repo_id] * len(sources), repo_id, roots=sources, aggr_root=staging)
        previous = _existing_report(output_root) if append else []
        report = {"episodes": previous + [s.quality for s in summaries]}
        (staging / QUALITY_REPORT).write_text(json.dumps(report, indent=2))

        if exists:
            retired = work / "replaced"
            output_root.rename(retired)
            try:
                staging.rename(output_root)
            except BaseException:
                retired.rename(output_root)  # put the old dataset back before the work folder goes
                raise
        else:
            staging.rename(output_root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if on_episode is not None:
        for summary in summaries:
            on_episode(summary)
    return output_root
