"""rosbag2 episodes -> a LeRobot v3.0 dataset, safely.

Each bag is converted on its own (in worker processes when `jobs > 1`; a one-episode bag is
streamed, its frames encoded while it is read) into a small LeRobot dataset in a work folder
beside the output; LeRobot's `aggregate_datasets` then joins them, after the existing dataset
when appending, into a staging dataset that is moved into place
only when everything succeeded. Any crash leaves the existing dataset untouched (the work folder
is removed, and work folders of killed conversions are swept at the next start); an episode that
violates the mapping's quality limits is refused, reported and not written. Each bag's storage is
checked first (`bag_integrity`: CRCs where it has them). A bag that fails, for any reason, stops
the conversion with nothing written when `strict`, and is otherwise refused like an episode, so
one bad recording does not cost a batch. `quality_report.json` beside the data (in the dataset
root) lists every episode converted or refused, with the reason.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from tqdm import tqdm

from koch_common.feature_mapping import Mapping
from koch_common.image_codec import DEPTH_MAP_INFO
from koch_common.processes import process_alive
from koch_common.resample import ResampleReport, StreamReport
from koch_convert.bag_integrity import check_bag
from koch_convert.bag_reader import BagReadError, ImageSpill
from koch_convert.codec_logs import set_codec_logs
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
WORK_FOLDER = ".{name}.converting-"  # + the converting process's id: `.<output name>.converting-<pid>`


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
    bag_failed: bool = False  # the whole bag was refused (unreadable, damaged, not convertible), not one episode

    @property
    def warnings(self) -> list[str]:
        """What the bag's integrity check found worth saying (no CRCs, no metadata.yaml)."""
        integrity = (self.quality or {}).get("integrity") or {}
        return list(integrity.get("warnings", []))


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
            # A depth map as LeRobot 0.6 declares one (one channel, is_depth_map, its unit), stored as
            # 16-bit PNG millimetres: lossless for 16UC1 cameras; see docs/convert.md (depth).
            height, width, _ = first[feature.key].shape
            features[feature.key] = {
                "dtype": "image",
                "shape": (height, width, 1),
                "names": ["height", "width", "channels"],
                "info": dict(DEPTH_MAP_INFO),
            }
        else:
            names = list(feature.joint_names)
            features[feature.key] = {"dtype": "float32", "shape": (len(names),), "names": names}
    return features


def _check_shapes(episode: Episode, frame: dict[str, Any], features: dict[str, dict[str, Any]]) -> None:
    for key, value in frame.items():
        expected = tuple(features[key]["shape"])
        if value.shape != expected:
            raise ConversionError(
                f"bag {episode.bag}: {key} has shape {value.shape} but the dataset's first episode "
                f"set {expected}; convert bags of different camera resolutions into separate datasets"
            )


def convert_one_bag(
    bag: Path, mapping: Mapping, root: Path, repo_id: str, vcodec: str, image_memory_gb: float = IMAGE_MEMORY_GB,
) -> list[dict[str, Any]]:
    """Convert one bag into a LeRobot dataset at `root` (created only if an episode passes).
    Image messages beyond `image_memory_gb` wait for their frames in a spill file beside `root`.
    Returns the quality report of each of its episodes (refused ones included).

    A bag that is one episode (no episode marker topic) is streamed, its task text read first:
    each frame is encoded as soon as no later message can change it, while the bag is still read,
    and the episode is discarded if its verdict at the end refuses it. Otherwise, or when a stream's
    stamps go backwards (only sorting the whole bag puts them in order), the bag is read first.

    The bag's storage is checked before anything is read (`check_bag`: BagReadError when damaged);
    what the check found goes into each episode's report as `integrity`."""
    integrity = check_bag(bag).report()
    budget = int(image_memory_gb * 2**30)
    if not mapping.episode_marker_topic:
        try:
            quality = _stream_one_bag(bag, mapping, root, repo_id, vcodec, ImageSpill(root.parent, budget))
            return [{**quality, "integrity": integrity}]
        except OutOfOrderStamps:
            shutil.rmtree(root, ignore_errors=True)  # the frames streamed so far; convert from the sorted bag
    episodes = resample_episodes(bag, mapping, ImageSpill(root.parent, budget))
    accepted = [e for e in episodes if e.refused is None]
    if accepted:
        with _DatasetWriter(mapping, root, repo_id, vcodec) as writer:
            for episode in accepted:
                for i in range(len(episode)):
                    writer.add_frame(episode, i)
                writer.save_episode()
    return [{**e.quality(), "integrity": integrity} for e in episodes]


def refused_bag_quality(bag: Path, error: Exception) -> dict[str, Any]:
    """The quality report entry of a bag that could not be converted: its reason, on one line."""
    known = isinstance(error, BagReadError | ConversionError)
    reason = " ".join((str(error) if known else f"{type(error).__name__}: {error}").split())
    return {"bag": str(bag), "segment": None, "task": None, "frames": 0, "grid_frames": 0, "duration_s": 0.0,
            "skipped_head_s": 0.0, "frames_dropped": {}, "streams": {}, "refused": reason, "integrity": None}


def _stream_one_bag(
    bag: Path, mapping: Mapping, root: Path, repo_id: str, vcodec: str, spill: ImageSpill
) -> dict[str, Any]:
    with _DatasetWriter(mapping, root, repo_id, vcodec) as writer:
        def on_frame(episode: Episode, index: int) -> None:
            if episode.refused is None:  # after a gap the episode is refused: stop encoding it
                writer.add_frame(episode, index)

        episode = stream_episode(bag, mapping, spill, on_frame)
        if episode.refused is None:
            writer.save_episode()
    if episode.refused is not None:
        shutil.rmtree(root, ignore_errors=True)  # its frames were encoded before the verdict
    return episode.quality()


def depth_png(millimetres: np.ndarray) -> PIL.Image.Image:
    """A uint16 (H, W, 1) depth map as the 16-bit greyscale image LeRobot writes to PNG losslessly."""
    return PIL.Image.fromarray(np.ascontiguousarray(millimetres[:, :, 0], dtype=np.uint16))


class _DatasetWriter:
    """A new LeRobot dataset at `root`, created with the first frame written (its features come
    from that frame's shapes); frames go straight into one video encoder per camera."""

    def __init__(self, mapping: Mapping, root: Path, repo_id: str, vcodec: str) -> None:
        self.mapping, self.root, self.repo_id, self.vcodec = mapping, root, repo_id, vcodec
        self.dataset: Any = None
        self.features: dict[str, dict[str, Any]] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _DatasetWriter:
        from koch_runtime import lerobot_compat  # imports LeRobot: only when converting

        self._stack.enter_context(lerobot_compat.embedding_only_for_image_columns())
        self._stack.enter_context(lerobot_compat.depth_map_statistics())
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
        values: dict[str, Any] = dict(frame)
        for feature in self.mapping.features:
            if feature.is_depth:
                values[feature.key] = depth_png(frame[feature.key])
        self.dataset.add_frame({**values, "task": episode.task})

    def save_episode(self) -> None:
        self.dataset.save_episode()

    def _create(self, first: dict[str, np.ndarray]) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset  # heavy import, only when converting

        from koch_runtime import lerobot_compat

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
        # Offline, wait for the encoder instead of dropping frames (see lerobot_compat.LosslessStreamingEncoder).
        lerobot_compat.use_lossless_streaming_encoder(self.dataset)


@dataclass(frozen=True)
class _BagJob:
    """One bag converted into its own small dataset at `root` (picklable: it goes to a worker process)."""

    bag: Path
    mapping: Mapping
    root: Path
    repo_id: str
    vcodec: str
    image_memory_gb: float
    verbose: bool  # ffmpeg's INFO logs too (a spawned worker starts with ffmpeg's defaults)


def _convert_job(job: _BagJob) -> list[dict[str, Any]]:
    set_codec_logs(job.verbose)
    return convert_one_bag(job.bag, job.mapping, job.root, job.repo_id, job.vcodec, job.image_memory_gb)


_STREAM_REPORT_FIELDS = frozenset(f.name for f in fields(StreamReport))


def _summaries(reports: list[dict[str, Any]], first_index: int, fps: int) -> list[EpisodeSummary]:
    out = []
    index = first_index
    for quality in reports:
        streams = {}
        for name, s in quality["streams"].items():
            counts = {k: v for k, v in s.items() if k in _STREAM_REPORT_FIELDS and k != "name"}
            streams[name] = StreamReport(name=name, **counts)
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
                bag_failed=quality["segment"] is None,
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
    verbose: bool = False,
    strict: bool = True,
) -> Path:
    """Convert bags (one or more episodes each, in the given order) into the LeRobot v3.0 dataset
    at `output_root`, or append them to it (`append=True`). Refused episodes are reported, not written.

    `strict`: nothing at `output_root` changes unless every bag was read and converted (a bag that
    fails raises its error). Otherwise a bag that fails, for any reason, is refused with its reason
    (`EpisodeSummary.bag_failed`) and the other bags are written.

    `progress`: one bar per stage (converting the bags, joining them); `verbose`: ffmpeg's own
    logs too (encoder statistics, muxer notes), which are otherwise quiet (`codec_logs`)."""
    _check_options(bag_dirs, overwrite, append, jobs, image_memory_gb)
    output_root = Path(output_root)
    exists = output_root.exists()
    first_index = _check_output(output_root, exists, overwrite, append, mapping, repo_id)
    append = append and exists
    set_codec_logs(verbose)
    work = _new_work_folder(output_root)
    try:
        bag_jobs = [_BagJob(Path(bag), mapping, work / "bags" / f"{i:05d}", repo_id, vcodec, image_memory_gb, verbose)
                    for i, bag in enumerate(bag_dirs)]
        results = _convert_each_bag(bag_jobs, jobs, progress, strict)
        summaries = _episode_summaries(results, first_index, mapping.fps)
        sources = [job.root for job in bag_jobs if job.root.exists()]
        if not sources:
            reasons = "; ".join(f"{s.bag.name}: {s.refused}" for s in summaries)
            raise ConversionError(f"every episode was refused, nothing to write: {reasons}")
        staging = _join(sources, output_root if append else None, repo_id, work / "dataset", progress, verbose)
        previous = _existing_report(output_root) if append else []
        _write_quality_report(staging, previous, summaries)
        _move_into_place(staging, output_root, exists, work / "replaced")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if on_episode is not None:
        for summary in summaries:
            on_episode(summary)
    return output_root


def _check_options(bag_dirs: Sequence[Path], overwrite: bool, append: bool, jobs: int,
                   image_memory_gb: float) -> None:
    if not bag_dirs:
        raise ConversionError("no bags to convert; pass at least one rosbag2 directory")
    if overwrite and append:
        raise ConversionError("choose either overwrite or append, not both")
    if jobs < 1:
        raise ConversionError(f"jobs must be >= 1, got {jobs}")
    if image_memory_gb < 0:
        raise ConversionError(f"image_memory_gb must be >= 0, got {image_memory_gb}")


def _check_output(output_root: Path, exists: bool, overwrite: bool, append: bool, mapping: Mapping,
                  repo_id: str) -> int:
    """An existing output is replaced only when asked, and appended to only when it is a dataset at the same fps.
    Returns the dataset index of the first episode written: after the existing ones when appending."""
    if exists and not (overwrite or append):
        raise ConversionError(
            f"{output_root} already exists; choose another --output, --append to add episodes, or --overwrite"
        )
    if append and exists:
        from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata  # heavy import, only when converting

        try:
            existing = LeRobotDatasetMetadata(repo_id, root=output_root)
        except Exception as err:
            raise ConversionError(f"cannot append: {output_root} is not a readable LeRobot dataset ({err})") from err
        if existing.fps != mapping.fps:
            raise ConversionError(f"cannot append: {output_root} has fps {existing.fps}, the mapping {mapping.fps}")
        return int(existing.total_episodes)
    return 0


def _new_work_folder(output_root: Path) -> Path:
    """An empty folder beside the output (same file system, so the result moves into place by renaming),
    named after this process; the work folders of conversions that were killed are swept first."""
    output_root.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_work_folders(output_root)
    work = output_root.parent / f"{WORK_FOLDER.format(name=output_root.name)}{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def _sweep_stale_work_folders(output_root: Path) -> None:
    """Remove the work folders a killed conversion into `output_root` left (no `finally` runs on SIGKILL):
    only folders named like ours, and only when the process in the name no longer runs (a live one may
    be converting into the same output right now)."""
    prefix = WORK_FOLDER.format(name=output_root.name)
    for folder in output_root.parent.iterdir():
        pid = folder.name.removeprefix(prefix)
        if folder.name.startswith(prefix) and pid.isdigit() and folder.is_dir() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _convert_each_bag(bag_jobs: list[_BagJob], jobs: int, progress: bool, strict: bool) -> list[list[dict[str, Any]]]:
    """Every bag's quality reports, in the bags' order; up to `jobs` bags at once in worker processes.
    A bag that fails raises when `strict`, else its one entry says why (and its partial dataset goes)."""
    results: list[list[dict[str, Any]]] = [[] for _ in bag_jobs]

    def refused(job: _BagJob, error: Exception) -> list[dict[str, Any]]:
        shutil.rmtree(job.root, ignore_errors=True)  # frames a streamed bag wrote before it failed
        return [refused_bag_quality(job.bag, error)]

    with tqdm(total=len(bag_jobs), desc="converting", unit="bag", disable=not progress) as bar:
        if jobs == 1 or len(bag_jobs) == 1:
            for i, job in enumerate(bag_jobs):
                try:
                    results[i] = _convert_job(job)
                except Exception as err:
                    if strict:
                        raise
                    results[i] = refused(job, err)
                bar.update()
            return results
        # spawn, not fork: the parent may hold threads (tqdm, torch) that fork would copy broken.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(bag_jobs)), mp_context=context) as pool:
            futures = {pool.submit(_convert_job, job): i for i, job in enumerate(bag_jobs)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except concurrent.futures.BrokenExecutor:
                        raise  # the pool itself is gone: not one bag's fault
                    except Exception as err:
                        if strict:
                            raise
                        results[i] = refused(bag_jobs[i], err)
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return results


def _episode_summaries(results: list[list[dict[str, Any]]], first_index: int, fps: int) -> list[EpisodeSummary]:
    """Every episode's summary, bag by bag; accepted episodes numbered from `first_index` in that order."""
    summaries: list[EpisodeSummary] = []
    for reports in results:
        summaries += _summaries(reports, first_index + sum(s.refused is None for s in summaries), fps)
    return summaries


def _join(sources: list[Path], existing: Path | None, repo_id: str, staging: Path, progress: bool,
          verbose: bool) -> Path:
    """One dataset at `staging`: the `existing` one (when appending; left as it is) and then each bag's,
    in order."""
    if existing is None and len(sources) == 1:
        sources[0].rename(staging)
        return staging
    sources = [existing, *sources] if existing is not None else sources
    from lerobot.datasets.aggregate import aggregate_datasets

    from koch_runtime import lerobot_compat

    with (
        tqdm(total=1, desc=f"joining {len(sources)} datasets", unit="step", disable=not progress) as bar,
        # LeRobot's own bars (meta data checked, files copied) would print under the one for this stage.
        contextlib.nullcontext() if verbose else lerobot_compat.aggregate_without_progress_bars(),
        lerobot_compat.depth_map_statistics(),
    ):
        aggregate_datasets([repo_id] * len(sources), repo_id, roots=sources, aggr_root=staging)
        bar.update()
    return staging


def _write_quality_report(staging: Path, previous: list[dict[str, Any]], summaries: list[EpisodeSummary]) -> None:
    report = {"episodes": previous + [s.quality for s in summaries]}
    (staging / QUALITY_REPORT).write_text(json.dumps(report, indent=2))


def _move_into_place(staging: Path, output_root: Path, exists: bool, retired: Path) -> None:
    """Rename `staging` to `output_root`; an existing output is renamed to `retired` first and put back if
    the move fails, so it is never lost."""
    if not exists:
        staging.rename(output_root)
        return
    output_root.rename(retired)
    try:
        staging.rename(output_root)
    except BaseException:
        retired.rename(output_root)  # put the old dataset back before the work folder goes
        raise
