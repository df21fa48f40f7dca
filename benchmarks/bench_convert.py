"""Conversion throughput: a 3-camera 640x480 @ 30 Hz recording, bag -> LeRobot v3.0 dataset.

Prints frames/s of the whole conversion (read + resample + decode + LeRobot's frame writing +
streaming video encoding + aggregate/finalize) and, measured in the same run, frames/s of
encoding the same frames alone, from memory, with the same encoder and settings (LeRobot's
streaming encoder, one thread per camera), and the ratio of the two (target >= 0.9). Runs go
A B B A (encode, convert, convert, encode), three times by default; each cycle gives a ratio (its
two encode times over its two conversion times) and the figure is the median cycle's, so one run
slowed by the host (single runs here swing by 2x) cannot decide it.

    python benchmarks/bench_convert.py [--quick] [--seconds S] [--vcodec h264]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for package_dir in sorted(ROOT.glob("src/*/*/package.xml")):
    sys.path.insert(0, str(package_dir.parent))
os.environ.setdefault("KOCH_CONFIG_DIR", str(ROOT / "config"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from results_log import Comparison, Figure, Target, record  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from koch_common.feature_mapping import FeatureConfig, MappingConfig, resolve  # noqa: E402
from koch_common.image_codec import to_fields  # noqa: E402
from koch_common.robot import load_koch  # noqa: E402
from koch_record.bag_writer import BagWriter  # noqa: E402

TS = get_typestore(Stores.ROS2_KILTED)
CAMERAS = ("head", "wrist", "side")
HEIGHT, WIDTH, FPS = 480, 640, 30


def frame_image(camera: int, k: int) -> np.ndarray:
    """A moving gradient with texture: not trivially compressible, different per camera."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = (x + 3 * k + 40 * camera) % 256
    image = np.stack([base, (y + 2 * k) % 256, (x // 8 + y // 8 + camera * 50) % 256], axis=-1)
    return image.astype(np.uint8)


def write_bag(path: Path, seconds: float) -> int:
    T = TS.types
    names = load_koch().follower.names
    start = 1_900_000_000 * 10**9
    frames = int(seconds * FPS)

    def header(t: float):
        ns = start + int(round(t * 1e9))
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=""
        )

    images = {(c, k): frame_image(c, k) for c in range(len(CAMERAS)) for k in range(frames)}
    with BagWriter(path, storage="mcap", typestore=TS) as bag:
        for topic in ("/follower/joint_states", "/leader/joint_states"):
            bag.add_topic(topic, "sensor_msgs/msg/JointState")
        for cam in CAMERAS:
            bag.add_topic(f"/{cam}/color/image_raw", "sensor_msgs/msg/Image")
        events = []
        for k in range(int(seconds * 50)):
            events += [(k / 50, topic, k) for topic in ("/follower/joint_states", "/leader/joint_states")]
        for k in range(frames):
            events += [(k / FPS + 0.001, f"/{cam}/color/image_raw", (c, k)) for c, cam in enumerate(CAMERAS)]
        for t, topic, key in sorted(events, key=lambda e: e[0]):
            if topic.endswith("joint_states"):
                msg = T["sensor_msgs/msg/JointState"](
                    header=header(t), name=names, position=np.sin(t + np.arange(6)), velocity=np.zeros(6),
                    effort=np.zeros(6))
                raw = TS.serialize_cdr(msg, "sensor_msgs/msg/JointState")
            else:
                f = to_fields(images[key], "rgb8")
                msg = T["sensor_msgs/msg/Image"](
                    header=header(t), height=f.height, width=f.width, encoding=f.encoding,
                    is_bigendian=f.is_bigendian, step=f.step, data=np.frombuffer(f.data, np.uint8))
                raw = TS.serialize_cdr(msg, "sensor_msgs/msg/Image")
            bag.write(topic, start + int(round((t + 0.002) * 1e9)), raw)
    return frames


def mapping():
    features = {
        "observation.state": FeatureConfig("/follower/joint_states", "sensor_msgs/msg/JointState", joints="follower"),
        "action": FeatureConfig("/leader/joint_states", "sensor_msgs/msg/JointState", joints="leader"),
    }
    for cam in CAMERAS:
        features[f"observation.images.{cam}"] = FeatureConfig(f"/{cam}/color/image_raw", "sensor_msgs/msg/Image")
    return resolve(MappingConfig(fps=FPS, clock="header", task="benchmark", features=features))


def encode_alone(frames: int, vcodec: str, work: Path) -> float:
    """Seconds to encode the same frames, already in memory, with the encoder and settings the
    converter uses (LeRobot's streaming encoder: one thread per camera, g=2, crf=30, yuv420p)."""
    from lerobot.datasets.video_utils import StreamingVideoEncoder

    from koch_runtime.lerobot_compat import lossless_encoder

    images = {cam: [frame_image(c, k) for k in range(frames)] for c, cam in enumerate(CAMERAS)}
    encoder = lossless_encoder(StreamingVideoEncoder(fps=FPS, vcodec=vcodec))
    keys = [f"observation.images.{cam}" for cam in CAMERAS]
    (work / "videos").mkdir()
    start = time.perf_counter()
    encoder.start_episode(keys, work / "videos")
    for k in range(frames):
        for key, cam in zip(keys, CAMERAS):
            encoder.feed_frame(key, images[cam][k])
    results = encoder.finish_episode()
    elapsed = time.perf_counter() - start
    assert all(path.stat().st_size > 0 for path, _ in results.values())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2 s recording (60 frames per camera)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cycles", type=int, default=3, help="A B B A cycles (the host's load drifts)")
    parser.add_argument("--vcodec", default="h264", choices=("libsvtav1", "h264", "hevc"))
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    # Import LeRobot/torch before timing: a one-off per process, not part of per-frame throughput.
    import lerobot.datasets.aggregate  # noqa: F401
    import lerobot.datasets.lerobot_dataset  # noqa: F401

    from koch_convert.convert import convert_bags

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        frames = write_bag(work / "bag", seconds)
        # A B B A (encode, convert, convert, encode), each figure the mean of its two runs: the host's
        # load drifts over a minute, and this order gives both the same average share of it.
        times: dict[str, list[float]] = {"convert": [], "encode": []}
        order = ("encode", "convert", "convert", "encode") * args.cycles
        for run, kind in enumerate(order):
            run_dir = work / f"run{run}"
            run_dir.mkdir()
            if kind == "encode":
                times[kind].append(encode_alone(frames, args.vcodec, run_dir))
            else:
                start = time.perf_counter()
                convert_bags([work / "bag"], mapping(), run_dir / "dataset", "bench/convert", vcodec=args.vcodec)
                times[kind].append(time.perf_counter() - start)
            shutil.rmtree(run_dir)  # keep the disk and page cache as for the first run
            print(f"run {run + 1}/{len(order)} {kind:7s}: {frames / times[kind][-1]:.1f} frames/s", flush=True)
    cycle_ratios = [sum(times["encode"][2 * c:2 * c + 2]) / sum(times["convert"][2 * c:2 * c + 2])
                    for c in range(args.cycles)]
    median = sorted(range(args.cycles), key=lambda c: cycle_ratios[c])[args.cycles // 2]
    convert_s, encode_s = (sum(times[k][2 * median:2 * median + 2]) / 2 for k in ("convert", "encode"))
    print(f"recording: {seconds:.1f} s ({frames} frames), {len(CAMERAS)} cameras {WIDTH}x{HEIGHT} @ {FPS} Hz, "
          f"vcodec {args.vcodec}; A B B A x {args.cycles}, ratio per cycle: "
          + ", ".join(f"{r:.2f}" for r in cycle_ratios))
    print(f"median cycle ({median + 1}): conversion {frames / convert_s:.1f} frames/s ({convert_s:.2f} s), "
          f"encoding alone {frames / encode_s:.1f} frames/s ({encode_s:.2f} s)")
    print(f"ratio conversion/encoding: {cycle_ratios[median]:.2f} (median of {args.cycles} cycles; target >= 0.9)")
    record("convert", [
        Figure("conversion / encoding alone (median cycle)", cycle_ratios[median], "x",
               Target(Comparison.AT_LEAST, 0.9)),
        Figure("conversion / encoding alone, lowest cycle", min(cycle_ratios), "x"),
        Figure("conversion / encoding alone, highest cycle", max(cycle_ratios), "x"),
        Figure("conversion rate (median cycle)", frames / convert_s, "frames/s"),
        Figure("encoding alone rate (median cycle)", frames / encode_s, "frames/s"),
    ], quick=args.quick)


if __name__ == "__main__":
    main()
