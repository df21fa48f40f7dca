"""bag_to_lerobot: convert recorded rosbag2 episodes into a LeRobot v3.0 dataset.

    bag_to_lerobot --bag-root bags/ --mapping mapping/koch_sim.yaml \\
        --output datasets/koch_sim --repo-id local/koch_sim [--vcodec h264] [--jobs 2] [--append] [--strict]

Exit status: 0 when every episode was written; 2 when some were refused by the mapping's
quality limits; 3 ("partial") when some bags could not be converted at all (damaged, unreadable,
not matching the mapping) and the others were written; 1 on an error (nothing written; with
--strict, any bag that cannot be converted is such an error). quality_report.json in the dataset
lists every episode and refused bag with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from koch_common.config import ConfigError
from koch_common.feature_mapping import DEFAULT_MAPPING, load_mapping
from koch_convert.bag_reader import BagReadError
from koch_convert.convert import IMAGE_MEMORY_GB, ConversionError, EpisodeSummary, convert_bags

VCODECS = ("libsvtav1", "h264", "hevc")
EXIT_OK, EXIT_ERROR, EXIT_EPISODES_REFUSED, EXIT_PARTIAL = 0, 1, 2, 3
# A folder holding one of these is a bag, with or without its metadata.yaml (then it is read from them).
BAG_FILES = ("metadata.yaml", "*.mcap", "*.db3", "*.mcap.zstd", "*.db3.zstd")


def find_bags(root: Path) -> list[Path]:
    """Bag directories directly under `root` (those with a metadata.yaml or a storage file), in name
    order. Hidden ones are partial recordings and are skipped; other folders are skipped with a note."""
    if not root.is_dir():
        raise ConversionError(f"--bag-root {root} is not a directory")
    bags = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(next(folder.glob(pattern), None) for pattern in BAG_FILES):
            bags.append(folder)
        else:
            print(f"note: skipping {folder}: no metadata.yaml and no .mcap or .db3 file, not a bag")
    if not bags:
        raise ConversionError(f"no rosbag2 directories (with metadata.yaml, .mcap or .db3 files) under {root}")
    return bags


def print_summary(summary: EpisodeSummary) -> None:
    report = summary.report
    if summary.refused:
        print(f"REFUSED {summary.bag.name}: {summary.refused}")
        return
    print(
        f"episode {summary.episode_index}: {summary.bag.name}: {summary.frames} frames, "
        f"{summary.duration_s:.2f} s (skipped {summary.skipped_head_s:.3f} s at the start)"
    )
    for stream in report.streams.values():
        rate = f"{stream.input_rate_hz:.1f} Hz" if stream.input_rate_hz else "n/a"
        quality = (summary.quality or {}).get("streams", {}).get(stream.name, {})
        receive = quality.get("receive_stamped", 0)
        print(
            f"    {stream.name}: {stream.samples_in} msgs at {rate}, {stream.distinct_samples_used} used, "
            f"max age {stream.max_age_s * 1000:.1f} ms, {stream.stale} stale frames"
            + (f", {receive} stamped with receive time (zero header stamps)" if receive else "")
        )


def final_line(summaries: list[EpisodeSummary], bags: int, output: Path) -> tuple[str, int]:
    """The last line printed and the exit status."""
    written = sum(s.refused is None for s in summaries)
    failed = sum(s.bag_failed for s in summaries)
    refused = sum(s.refused is not None and not s.bag_failed for s in summaries)
    if failed:
        line = (f"partial: {bags - failed} of {bags} bag(s) converted, {failed} refused (see REFUSED above); wrote "
                f"{written} episode(s) to {output}; {refused} episode(s) refused by quality limits")
        return line, EXIT_PARTIAL
    line = f"wrote {written} episode(s) from {bags} bag(s) to {output}; {refused} refused"
    return line, EXIT_EPISODES_REFUSED if refused else EXIT_OK


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bag_to_lerobot", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bags", nargs="+", type=Path, help="bag directories, one episode each")
    source.add_argument("--bag-root", type=Path, help="convert every bag directory under this folder")
    parser.add_argument("--mapping", default=DEFAULT_MAPPING, help="mapping YAML (or under config/)")
    parser.add_argument("--output", required=True, type=Path, help="dataset root to create")
    parser.add_argument("--repo-id", default="local/koch_sim")
    parser.add_argument("--vcodec", default="libsvtav1", choices=VCODECS)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --output")
    parser.add_argument("--append", action="store_true", help="add the bags' episodes to the dataset at --output")
    parser.add_argument("--strict", action="store_true",
                        help="all or nothing: a bag that cannot be converted is an error and nothing is written "
                             "(default: it is refused, reported, and the other bags are written)")
    parser.add_argument("--jobs", type=int, default=1, help="bags converted in parallel (processes)")
    parser.add_argument("--image-memory-gb", type=float, default=IMAGE_MEMORY_GB,
                        help="image bytes a bag keeps in memory while it converts (per job); "
                             "the rest waits in a temporary file beside --output")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="mapping overrides key=value")
    parser.add_argument("--verbose", action="store_true",
                        help="also print ffmpeg's encoder statistics and muxer notes (quiet otherwise)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summaries: list[EpisodeSummary] = []
    warned: set[Path] = set()

    def on_episode(summary: EpisodeSummary) -> None:
        summaries.append(summary)
        if summary.bag not in warned:
            warned.add(summary.bag)
            for warning in summary.warnings:
                print(f"warning: {summary.bag.name}: {warning}")
        print_summary(summary)

    try:
        mapping = load_mapping(args.mapping, args.overrides)
        bags = list(args.bags) if args.bags else find_bags(args.bag_root)
        output = convert_bags(
            bags,
            mapping,
            args.output,
            args.repo_id,
            vcodec=args.vcodec,
            overwrite=args.overwrite,
            append=args.append,
            jobs=args.jobs,
            image_memory_gb=args.image_memory_gb,
            progress=True,
            on_episode=on_episode,
            verbose=args.verbose,
            strict=args.strict,
        )
    except (ConfigError, BagReadError, ConversionError) as err:
        print(f"bag_to_lerobot: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    line, status = final_line(summaries, len(bags), output)
    print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
