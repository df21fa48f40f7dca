"""Conversion of richer bags: zstd compression (file and message mode), sqlite3 + MCAP, a
JointTrajectory command topic as the action, CompressedImage (jpeg) colour, 16UC1 depth, a task
topic, episode markers, quality limits (a refused episode), parallel workers, appending, and a
truncated bag that must leave the existing dataset as it was."""

from __future__ import annotations

import fractions
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from koch_common.config import ConfigError, load_config
from koch_common.feature_mapping import FeatureConfig, LimitsConfig, MappingConfig, resolve
from koch_common.image_codec import to_fields
from koch_common.resample import Align
from koch_common.robot import load_koch
from koch_convert import episodes as episodes_module
from koch_convert.bag_reader import BagReadError
from koch_convert.cli import main as cli_main
from koch_convert.convert import QUALITY_REPORT, ConversionError, convert_bags, resample_episodes
from koch_convert.episodes import Episode, OutOfOrderStamps, stream_episode
from koch_convert.extract import decode_depth
from koch_record.bag_writer import BagWriter
from koch_runtime.observation import depth_map_to_metres

pytestmark = pytest.mark.video

TS = get_typestore(Stores.ROS2_KILTED)
FPS = 30
JOINTS = load_koch().follower.names
H, W, DH, DW = 48, 64, 12, 16
# stream -> (first stamp in s after the bag start, rate in Hz)
STATE = (0.0, 50.0)
COMMAND = (0.004, 25.0)
COLOR = (0.010, 30.0)
DEPTH = (0.012, 15.0)
DURATION = 2.0
MARKER_S = 1.0  # the bag with a marker holds two episodes: [0, 1) and [1, 2] s
START_NS = 1_800_000_000 * 10**9


def joints_at(t: float, arm: int) -> np.ndarray:
    return np.sin(t * (1.0 + np.arange(6)) + arm) * 0.5


def held(stream: tuple[float, float], t: float) -> float:
    """Stamp of the latest sample at or before t (hold/asof)."""
    t0, rate = stream
    return t0 + np.floor((t - t0) * rate + 1e-6) / rate


def last(stream: tuple[float, float], before: float) -> float:
    """Stamp of the stream's last sample before `before` (the bag holds DURATION * rate samples)."""
    t0, rate = stream
    k = min(np.ceil((before - t0) * rate - 1e-6) - 1, DURATION * rate - 1)
    return t0 + k / rate


def depth_mm(k: int) -> np.ndarray:
    return (500 + 3 * k + np.arange(DH * DW, dtype=np.uint16).reshape(DH, DW)).astype(np.uint16)


def jpeg(level: int) -> bytes:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = W, H, "yuvj420p"
    codec.time_base = fractions.Fraction(1, 30)
    frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), level, np.uint8), format="rgb24").reformat(
        format="yuvj420p"
    )
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


def header(t: float):
    ns = START_NS + int(round(t * 1e9))
    stamp = TS.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
    return TS.types["std_msgs/msg/Header"](stamp=stamp, frame_id="")


def write_bag(
    path: Path, storage: str, compression: CompressionMode, marker: bool, command_gap: bool = False
) -> None:
    T = TS.types
    msgs: list[tuple[str, str, float, object]] = []
    for k in range(int(DURATION * STATE[1])):
        t = STATE[0] + k / STATE[1]
        msgs.append(("/follower/joint_states", "sensor_msgs/msg/JointState", t, T["sensor_msgs/msg/JointState"](
            header=header(t), name=JOINTS[::-1], position=np.ascontiguousarray(joints_at(t, 0)[::-1]),
            velocity=np.zeros(6), effort=np.zeros(6))))
    for k in range(int(DURATION * COMMAND[1])):
        t = COMMAND[0] + k / COMMAND[1]
        if command_gap and 0.5 < t < 1.0:
            continue
        point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=joints_at(t, 1), velocities=np.zeros(6), accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
        msgs.append(("/follower/joint_commands", "trajectory_msgs/msg/JointTrajectory", t,
                     T["trajectory_msgs/msg/JointTrajectory"](header=header(t), joint_names=JOINTS, points=[point])))
    for k in range(int(DURATION * COLOR[1])):
        t = COLOR[0] + k / COLOR[1]
        msgs.append(("/head/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage", t,
                     T["sensor_msgs/msg/CompressedImage"](header=header(t), format="jpeg",
                                                          data=np.frombuffer(jpeg((k * 5) % 256), np.uint8))))
    for k in range(int(DURATION * DEPTH[1])):
        t = DEPTH[0] + k / DEPTH[1]
        f = to_fields(depth_mm(k), "16UC1")
        msgs.append(("/head/depth/image_raw", "sensor_msgs/msg/Image", t, T["sensor_msgs/msg/Image"](
            header=header(t), height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian,
            step=f.step, data=np.frombuffer(f.data, np.uint8))))
    msgs.append(("/task", "std_msgs/msg/String", 0.0, T["std_msgs/msg/String"](data="pick the cube")))
    if marker:
        msgs.append(("/task", "std_msgs/msg/String", MARKER_S, T["std_msgs/msg/String"](data="place the cube")))
        msgs.append(("/episode_start", "std_msgs/msg/String", MARKER_S, T["std_msgs/msg/String"](data="")))
    # A topic of a custom type the mapping does not name: must be ignored, not deserialized.
    custom = "koch_test_msgs/msg/Unknown"
    writer = Writer(path, version=Writer.VERSION_LATEST,
                    storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    if compression != CompressionMode.NONE:
        writer.set_compression(compression, CompressionFormat.ZSTD)
    with writer:
        conns = {}
        for topic, msgtype, _, _ in msgs:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
        vendor = get_typestore(Stores.EMPTY)
        vendor.register(get_types_from_msg("uint8 x", custom))
        unknown = writer.add_connection("/vendor/blob", custom, msgdef="uint8 x", rihs01=vendor.hash_rihs01(custom))
        writer.write(unknown, START_NS, b"\x00\x01\x00\x00\x07")
        # receive time = stamp + 2 ms, written in receive order
        for topic, msgtype, t, msg in sorted(msgs, key=lambda m: m[2]):
            writer.write(conns[topic], START_NS + int(round((t + 0.002) * 1e9)), TS.serialize_cdr(msg, msgtype))


def mapping(action_align: Align = Align.ASOF, topics: bool = True, **limits):
    """`topics=False`: no task or marker topic, so the converter streams each bag."""
    def feature(topic: str, msgtype: str, **kw) -> FeatureConfig:
        return FeatureConfig(topic=topic, type=msgtype, **kw)

    return resolve(MappingConfig(
        fps=FPS,
        clock="header",
        task="fallback task",
        task_topic="/task" if topics else None,
        episode_marker_topic="/episode_start" if topics else None,
        limits=LimitsConfig(**{"min_frames": 5, "max_gap_s": 0.3, **limits}),
        features={
            "observation.state": feature("/follower/joint_states", "sensor_msgs/msg/JointState", joints="follower"),
            "action": feature("/follower/joint_commands", "trajectory_msgs/msg/JointTrajectory", joints="follower",
                              align=action_align, tolerance_s=0.05),
            "observation.images.head": feature("/head/color/image_raw/compressed",
                                               "sensor_msgs/msg/CompressedImage"),
            "observation.images.head_depth": feature("/head/depth/image_raw", "sensor_msgs/msg/Image",
                                              max_staleness_s=0.1),
        },
    ))


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rich_bags")
    out = {
        "marked": root / "marked_sqlite_zstd_file",  # two episodes
        "gap": root / "gap_mcap_zstd_message",  # refused: the command stream stops for 0.5 s
        "late": root / "late_mcap_plain",  # appended later
    }
    write_bag(out["marked"], "sqlite3", CompressionMode.FILE, marker=True)
    write_bag(out["gap"], "mcap", CompressionMode.MESSAGE, marker=False, command_gap=True)
    write_bag(out["late"], "mcap", CompressionMode.NONE, marker=False)
    return out


@pytest.fixture(scope="module")
def dataset(bags: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("rich_out") / "ds"
    convert_bags([bags["marked"], bags["gap"]], mapping(), output, "local/rich", vcodec="h264", jobs=2)
    return output


def test_markers_tasks_values_and_refusal(dataset: Path) -> None:
    ds = LeRobotDataset("local/rich", root=dataset)
    assert ds.num_episodes == 2, "the marked bag gives two episodes; the bag with a gap is refused"
    report = json.loads((dataset / QUALITY_REPORT).read_text())["episodes"]
    assert [e["refused"] is None for e in report] == [True, True, False]
    assert "action" in report[2]["refused"] and "tolerance" in report[2]["refused"]
    assert report[2]["streams"]["action"]["max_gap_s"] > 0.5
    assert report[0]["streams"]["observation.images.head_depth"]["input_rate_hz"] == pytest.approx(15.0, rel=0.01)

    # Episode 0 starts when every stream is fresh (the depth stream, at 0.012 s); episode 1 at the
    # first time every stream has a sample after the marker, which is stamped with its receive time
    # (MARKER_S + 2 ms; a String has no header); each ends at the earliest last sample of any stream.
    marker = MARKER_S + 0.002
    streams = (STATE, COMMAND, COLOR, DEPTH)
    starts = {0: DEPTH[0], 1: max(last(s, marker) + 1 / s[1] for s in streams)}
    ends = {0: min(last(s, marker) for s in streams), 1: min(last(s, DURATION) for s in streams)}
    expected_frames = {e: int(np.floor((ends[e] - starts[e]) * FPS + 1e-6)) + 1 for e in (0, 1)}
    for e in (0, 1):
        assert report[e]["frames"] == expected_frames[e]
    assert ds.num_frames == sum(expected_frames.values())
    assert ds.meta.episodes["length"][:] == [expected_frames[0], expected_frames[1]]

    tasks = {0: "pick the cube", 1: "place the cube"}
    offset = {0: 0, 1: expected_frames[0]}
    for e, k in ((0, 0), (0, 7), (0, expected_frames[0] - 1), (1, 0), (1, 13), (1, expected_frames[1] - 1)):
        t = starts[e] + k / FPS
        item = ds[offset[e] + k]
        assert int(item["episode_index"]) == e and int(item["frame_index"]) == k
        assert item["task"] == tasks[e]
        np.testing.assert_allclose(item["observation.state"], joints_at(held(STATE, t), 0), atol=1e-6)
        np.testing.assert_allclose(item["action"], joints_at(held(COMMAND, t), 1), atol=1e-6)
        k_depth = round((held(DEPTH, t) - DEPTH[0]) * DEPTH[1])
        # A one-channel depth map, lossless: the recorded millimetres, in metres through the one decoding.
        depth = depth_map_to_metres(item["observation.images.head_depth"])
        assert depth.dtype == torch.float32 and depth.shape == (1, DH, DW)
        np.testing.assert_array_equal(np.round(depth[0].numpy() * 1000).astype(np.uint16), depth_mm(k_depth))
        k_color = round((held(COLOR, t) - COLOR[0]) * COLOR[1])
        assert float(item["observation.images.head"].mean()) * 255 == pytest.approx((k_color * 5) % 256, abs=4)

    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, shuffle=True)))
    assert batch["observation.state"].shape == (3, 6) and batch["action"].shape == (3, 6)
    assert batch["observation.images.head"].shape == (3, 3, H, W)
    assert batch["observation.images.head_depth"].shape == (3, 1, DH, DW)
    feature = ds.meta.features["observation.images.head_depth"]
    assert feature["dtype"] == "image" and tuple(feature["shape"]) == (DH, DW, 1)
    assert feature["info"] == {"is_depth_map": True, "depth_unit": "mm"}  # LeRobot 0.6's depth-map flags
    stats = ds.meta.stats["observation.images.head_depth"]  # in millimetres, one channel
    assert np.asarray(stats["mean"]).shape == (1, 1, 1)
    assert 500 <= float(np.asarray(stats["min"]).ravel()[0]) < float(np.asarray(stats["max"]).ravel()[0]) < 1500


def test_append_then_truncated_bag_leaves_dataset_readable(
    dataset: Path, bags: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    code = cli_main(["--bags", str(bags["late"]), "--mapping", "mapping/koch_sim.yaml", "--output", str(copy)]
                    + ["--repo-id", "local/rich", "--vcodec", "h264", "--append"]
                    + ["--set", "fps=15"])
    assert code == 1, "a mapping at another fps cannot append"

    convert_bags([bags["late"]], mapping(), copy, "local/rich", vcodec="h264", append=True)
    ds = LeRobotDataset("local/rich", root=copy)
    assert ds.num_episodes == 3
    before = LeRobotDataset("local/rich", root=dataset)
    np.testing.assert_array_equal(ds[5]["observation.state"], before[5]["observation.state"])
    assert ds[ds.num_frames - 1]["task"] == "pick the cube"
    assert len(json.loads((copy / QUALITY_REPORT).read_text())["episodes"]) == 4

    broken = tmp_path / "broken"
    shutil.copytree(bags["late"], broken)
    mcap = next(broken.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    snapshot = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    with pytest.raises(BagReadError, match=r"broken is truncated: late_mcap_plain.mcap ends without its summary"):
        convert_bags([bags["late"], broken], mapping(), copy, "local/rich", vcodec="h264", append=True)
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == snapshot
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no work folder left"
    assert LeRobotDataset("local/rich", root=copy).num_episodes == 3


def test_align_drop_leaves_out_frames_and_counts_them(bags: dict[str, Path]) -> None:
    (episode,) = resample_episodes(bags["gap"], mapping(Align.DROP, max_dropped_fraction=0.5, max_gap_s=None))
    assert episode.refused is None
    # the command stream is silent from 0.484 to 1.004 s: frames more than 0.05 s after 0.484 go
    dropped = sum(episode.dropped.values())
    assert dropped == episode.report.frames - len(episode) and 13 <= dropped <= 16
    assert list(episode.dropped) == ["action: no sample within 0.05 s"]
    assert not np.any((episode.frame_times_s > 0.484 + 0.05) & (episode.frame_times_s < 1.004))
    (strict,) = resample_episodes(bags["gap"], mapping(Align.DROP, max_gap_s=None))
    assert strict.refused is not None and "over limits.max_dropped_fraction=0.05" in strict.refused


def test_limits_refuse_every_episode_and_write_nothing(bags: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"every episode was refused.*min_frames=1000"):
        convert_bags([bags["late"]], mapping(min_frames=1000), tmp_path / "ds", "local/x", vcodec="h264")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_mapped_type_is_a_clear_error() -> None:
    config = load_config(MappingConfig, "mapping/koch_sim.yaml")
    config.features = {"observation.state": FeatureConfig(
        topic="/vendor/state", type="koch_test_msgs/msg/Unknown", joints="follower")}
    with pytest.raises(ConfigError, match="koch_test_msgs/msg/Unknown' is not supported; use one of"):
        resolve(config)


def test_depth_decoding_is_exact_for_both_encodings() -> None:
    mm = depth_mm(3)
    f16 = to_fields(mm, "16UC1")
    msg16 = TS.types["sensor_msgs/msg/Image"](header=header(0), height=f16.height, width=f16.width,
                                               encoding="16UC1", is_bigendian=0, step=f16.step,
                                               data=np.frombuffer(f16.data, np.uint8))
    np.testing.assert_array_equal(decode_depth(msg16)[:, :, 0], mm)
    metres = (mm.astype(np.float32) / 1000.0) + np.float32(1e-4)
    metres[0, 0] = np.nan
    f32 = to_fields(metres, "32FC1")
    msg32 = TS.types["sensor_msgs/msg/Image"](header=header(0), height=f32.height, width=f32.width,
                                               encoding="32FC1", is_bigendian=0, step=f32.step,
                                               data=np.frombuffer(f32.data, np.uint8))
    out = decode_depth(msg32)[:, :, 0]
    assert out.dtype == np.uint16 and out[0, 0] == 0  # no return
    np.testing.assert_array_equal(out.ravel()[1:], mm.ravel()[1:])  # rounded to the millimetre


def same_episode(streamed: Episode, frames: list[dict[str, np.ndarray]], whole: Episode) -> None:
    """Frame for frame the same data and quality report (stamps differ only by the reference stamp).
    `frames`: the streamed episode's frames as they were passed on (released after that)."""
    assert (len(streamed), streamed.refused, streamed.dropped) == (len(whole), whole.refused, whole.dropped)
    np.testing.assert_allclose(np.diff(streamed.frame_times_s), np.diff(whole.frame_times_s), atol=1e-9)
    assert len(frames) == len(whole)
    for k, frame in enumerate(frames):
        expected = whole.frame(k)
        for key, value in frame.items():
            np.testing.assert_array_equal(value, expected[key])
    assert streamed.skipped_head_s == pytest.approx(whole.skipped_head_s, abs=1e-9)
    assert streamed.report.frames == whole.report.frames
    for name, stream in whole.report.streams.items():
        got = streamed.report.streams[name]
        assert (got.samples_in, got.missing, got.stale, got.gaps) == (stream.samples_in, stream.missing,
                                                                      stream.stale, stream.gaps)
        assert got.max_age_s == pytest.approx(stream.max_age_s, abs=1e-9)


def test_streamed_bags_give_the_same_episodes_while_still_reading(
    bags: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without task or marker topics a bag is converted while it is read: each frame is passed on as
    soon as no later message can change it, and the episode equals the one built from the whole bag
    (compressed colour, depth, a command topic, zstd file and message compression)."""
    read = [0]
    iter_messages = episodes_module.iter_messages

    def counted(*args, **kwargs):
        for item in iter_messages(*args, **kwargs):
            read[0] += 1
            yield item

    monkeypatch.setattr(episodes_module, "iter_messages", counted)
    drop = {"action_align": Align.DROP, "max_dropped_fraction": 0.5, "max_gap_s": None}
    for name, limits, refused in (("late", {}, None), ("gap", {}, "has no sample within"), ("gap", drop, None)):
        m = mapping(topics=False, **limits)
        read[0] = 0
        passed: list[tuple[int, int]] = []  # (frame index, messages read by then)
        frames: list[dict[str, np.ndarray]] = []

        def on_frame(episode: Episode, k: int, passed=passed, frames=frames) -> None:
            passed.append((k, read[0]))
            frames.append({key: value.copy() for key, value in episode.frame(k).items()})

        streamed = stream_episode(bags[name], m, None, on_frame)
        (whole,) = resample_episodes(bags[name], m)
        same_episode(streamed, frames, whole)
        assert [k for k, _ in passed] == list(range(len(whole)))
        assert passed[0][1] < read[0] / 4, "the first frame went out while most of the bag was unread"
        assert streamed.refused is None if refused is None else refused in (streamed.refused or "")
    assert sum(streamed.dropped.values()) > 0, "align drop left frames out of the streamed episode too"
    with pytest.raises(ConversionError, match="frame 0 was streamed to the dataset and released"):
        streamed.frame(0)  # written frames are not kept: memory holds a few images, not the bag's

    # through convert_bags: the refused (gap) episode leaves nothing, the other is written
    output = tmp_path / "ds"
    convert_bags([bags["late"], bags["gap"]], mapping(topics=False), output, "local/s", vcodec="h264")
    ds = LeRobotDataset("local/s", root=output)
    (whole,) = resample_episodes(bags["late"], mapping(topics=False))
    assert ds.num_episodes == 1 and ds.num_frames == len(whole)
    for k in (0, len(whole) - 1):
        np.testing.assert_allclose(ds[k]["observation.state"].numpy(), whole.value("observation.state", k))
        assert ds[k]["task"] == "fallback task"
    report = json.loads((output / QUALITY_REPORT).read_text())["episodes"]
    assert [e["refused"] is None for e in report] == [True, False]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"], "no work folder or refused episode left"


def test_stamps_going_backwards_are_sorted_by_reading_the_whole_bag(bags: dict[str, Path], tmp_path: Path) -> None:
    """Two follower messages swapped in the bag (header stamps go backwards, as with two publishers on
    one topic): streaming stops with OutOfOrderStamps, and the converter reads the bag whole instead."""
    swapped = tmp_path / "swapped"
    with Reader(bags["late"]) as reader:
        records = [(c.topic, c.msgtype, t, raw) for c, t, raw in reader.messages() if c.topic != "/vendor/blob"]
    follower = [i for i, r in enumerate(records) if r[0] == "/follower/joint_states"]
    a, b = follower[20], follower[21]
    records[a], records[b] = (*records[a][:3], records[b][3]), (*records[b][:3], records[a][3])
    with BagWriter(swapped, storage="mcap", typestore=TS) as bag:
        for topic, msgtype in dict.fromkeys((r[0], r[1]) for r in records):
            bag.add_topic(topic, msgtype)
        for topic, _, t, raw in records:
            bag.write(topic, t, raw)
    m = mapping(topics=False)
    with pytest.raises(OutOfOrderStamps, match="/follower/joint_states is stamped"):
        stream_episode(swapped, m, None, lambda episode, k: None)
    output = tmp_path / "ds"
    convert_bags([swapped], m, output, "local/s", vcodec="h264")
    (whole,) = resample_episodes(swapped, m)
    ds = LeRobotDataset("local/s", root=output)
    assert ds.num_frames == len(whole) > 0
    np.testing.assert_allclose(ds[len(whole) - 1]["action"].numpy(), whole.value("action", len(whole) - 1))
