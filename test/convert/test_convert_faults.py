"""Trust under bad input and faults (issue 28): corrupt bytes in a bag, bags without metadata.yaml,
JointState without joint names, zero header stamps, one bad bag in a batch, and work folders left
behind by a killed conversion. Real rosbag2 files (the project's recorder, rosbags' plain writer),
real LeRobot datasets with h264 video."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from koch_common.config import ConfigError, config_dir
from koch_common.feature_mapping import load_mapping
from koch_common.image_codec import to_fields
from koch_common.robot import load_koch
from koch_convert.bag_integrity import check_bag
from koch_convert.bag_reader import BagReadError, read_topics
from koch_convert.cli import main as cli_main
from koch_convert.convert import QUALITY_REPORT, ConversionError, resample_bag
from koch_record.bag_writer import BagWriter

pytestmark = pytest.mark.video

TS = get_typestore(Stores.ROS2_KILTED)
JOINTS = load_koch().follower.names
STATE_HZ, IMAGE_HZ, DURATION_S, LATENCY_S = 50, 30, 1.0, 0.002
H, W = 32, 48
START_NS = 1_750_000_000 * 10**9
TOPICS = {"/follower/joint_states": 0, "/leader/joint_states": 1}  # topic -> arm (offset of its trajectory)


def joints_at(t: float, arm: int) -> np.ndarray:
    return np.sin(t * (1.0 + np.arange(6)) + arm) * 0.5


def stamp(t: float | None):
    ns = 0 if t is None else START_NS + int(round(t * 1e9))
    time = TS.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
    return TS.types["std_msgs/msg/Header"](stamp=time, frame_id="")


def write_bag(path: Path, *, names: bool = True, recorder: bool = True, storage: str = "mcap",
              zero_stamps: str = "", short_message_at_s: float | None = None) -> Path:
    """One second of follower and leader joint states (50 Hz) and a 30 Hz rgb8 + 16UC1 depth camera, written in receive
    order (2 ms after each header stamp). `names=False`: JointState with an empty `name` (positions in
    koch.yaml order), as some real robots publish; `zero_stamps`: a topic whose header stamps are all 0;
    `short_message_at_s`: from then on the leader publishes 5 positions instead of 6; `recorder=False`:
    written by rosbags' plain writer (no CRCs), as by a foreign tool."""
    messages = []
    for topic, arm in TOPICS.items():
        for k in range(int(DURATION_S * STATE_HZ)):
            t = k / STATE_HZ
            position = joints_at(t, arm)
            if short_message_at_s is not None and arm == 1 and t >= short_message_at_s:
                position = position[:5]
            msg = TS.types["sensor_msgs/msg/JointState"](
                header=stamp(None if topic == zero_stamps else t), name=list(JOINTS) if names else [],
                position=position, velocity=np.zeros(0), effort=np.zeros(0))
            messages.append((topic, "sensor_msgs/msg/JointState", t, msg))
    for k in range(int(DURATION_S * IMAGE_HZ)):
        t = 0.004 + k / IMAGE_HZ
        f = to_fields(np.full((H, W, 3), (k * 8) % 256, np.uint8), "rgb8")
        msg = TS.types["sensor_msgs/msg/Image"](
            header=stamp(t), height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian,
            step=f.step, data=np.frombuffer(f.data, np.uint8))
        messages.append(("/head/color/image_raw", "sensor_msgs/msg/Image", t, msg))
        d = to_fields(np.full((H, W), 450 + k, np.uint16), "16UC1")  # the registered depth map
        depth = TS.types["sensor_msgs/msg/Image"](
            header=stamp(t), height=d.height, width=d.width, encoding=d.encoding, is_bigendian=d.is_bigendian,
            step=d.step, data=np.frombuffer(d.data, np.uint8))
        messages.append(("/head/depth/image_raw", "sensor_msgs/msg/Image", t, depth))
    task = TS.types["std_msgs/msg/String"](data="reach the red target")  # as the sim publishes it
    messages.append(("/sim/task", "std_msgs/msg/String", 0.0, task))
    messages.sort(key=lambda m: m[2])
    receive = [START_NS + int(round((t + LATENCY_S) * 1e9)) for _, _, t, _ in messages]
    if recorder:
        with BagWriter(path, storage=storage, typestore=TS) as bag:
            for topic, msgtype in dict.fromkeys((m[0], m[1]) for m in messages):
                bag.add_topic(topic, msgtype)
            for (topic, msgtype, _, msg), t_ns in zip(messages, receive, strict=True):
                bag.write(topic, t_ns, TS.serialize_cdr(msg, msgtype))
    else:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
            conns = {}
            for topic, msgtype in dict.fromkeys((m[0], m[1]) for m in messages):
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            for (topic, msgtype, _, msg), t_ns in zip(messages, receive, strict=True):
                writer.write(conns[topic], t_ns, TS.serialize_cdr(msg, msgtype))
    return path


def corrupt_middle(bag: Path) -> None:
    """4 KB of random bytes written over the middle of the bag's storage file."""
    mcap = next(bag.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = np.random.default_rng(28).bytes(4096)
    mcap.write_bytes(bytes(data))


def by_index_mapping(tmp_path: Path) -> Path:
    """koch_sim.yaml with both joint streams read by index when a message leaves `name` empty."""
    text = (config_dir() / "mapping/koch_sim.yaml").read_text()
    text = text.replace("    joints: follower", "    joints: follower\n    unnamed_joints: by_index")
    text = text.replace("    joints: leader", "    joints: leader\n    unnamed_joints: by_index")
    path = tmp_path / "by_index.yaml"
    path.write_text(text)
    return path


# --- integrity -------------------------------------------------------------------------------------


def test_recorded_bag_verifies_and_corrupt_bytes_are_refused(tmp_path: Path) -> None:
    good = write_bag(tmp_path / "good")
    integrity = check_bag(good)
    assert integrity.verified and integrity.storage == "mcap"
    assert "chunk CRC" in integrity.detail and "data section CRC" in integrity.detail

    corrupt = write_bag(tmp_path / "corrupt")
    corrupt_middle(corrupt)
    with pytest.raises(BagReadError, match=rf"{corrupt}.*CRC") as err:
        check_bag(corrupt)
    assert "\n" not in str(err.value), "one line"


def test_bag_without_crcs_is_reported_unverified(tmp_path: Path) -> None:
    foreign = check_bag(write_bag(tmp_path / "foreign", recorder=False))
    assert not foreign.verified
    assert any("no CRC" in w for w in foreign.warnings), foreign.warnings
    sqlite = check_bag(write_bag(tmp_path / "sqlite", storage="sqlite3"))
    assert not sqlite.verified and "quick_check" in sqlite.detail


def test_real_bags_are_checked_with_the_crcs_they_have() -> None:
    real = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "real_bags"
    split = check_bag(real / "split_mcap_wbag")  # rosbag2's test bag (mcap go writer): zstd chunks with CRCs
    assert split.verified and "5 of 5 chunk CRCs match" in split.detail, split
    jazzy = check_bag(real / "jazzy_mcap_joint_states")  # `ros2 bag record` on Jazzy: a summary CRC only
    assert not jazzy.verified and "the summary CRC matches" in jazzy.detail, jazzy
    assert any("no CRC on 4 of 4 chunks" in w for w in jazzy.warnings), jazzy.warnings


# --- bags without metadata.yaml --------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_without_metadata_is_read_from_its_storage_file(tmp_path: Path, storage: str) -> None:
    bag = write_bag(tmp_path / "bag", storage=storage)
    expected = read_topics(bag, {"/leader/joint_states": "sensor_msgs/msg/JointState"})
    (bag / "metadata.yaml").unlink()
    streams = read_topics(bag, {"/leader/joint_states": "sensor_msgs/msg/JointState"})
    assert streams["/leader/joint_states"].stamps_ns == expected["/leader/joint_states"].stamps_ns
    integrity = check_bag(bag)
    assert any("metadata.yaml" in w and "ros2 bag reindex" in w for w in integrity.warnings), integrity.warnings


def test_bag_without_metadata_that_cannot_be_read_names_the_reindex_command(tmp_path: Path) -> None:
    """A recorder killed mid-episode: no metadata.yaml, and an MCAP file that ends without its summary."""
    bag = tmp_path / "killed"
    writer = Writer(bag, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conn = writer.add_connection("/leader/joint_states", "sensor_msgs/msg/JointState", typestore=TS)
    msg = TS.types["sensor_msgs/msg/JointState"](header=stamp(0.0), name=list(JOINTS), position=joints_at(0, 1),
                                                 velocity=np.zeros(0), effort=np.zeros(0))
    writer.write(conn, START_NS, TS.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
    writer.abort()
    for check in (check_bag, lambda b: read_topics(b, {"/leader/joint_states": None})):
        with pytest.raises(BagReadError, match=rf"no metadata.yaml.*`ros2 bag reindex {bag} -s mcap`"):
            check(bag)


# --- real-world variety: unnamed joints, zero stamps -----------------------------------------------


def test_joint_state_without_names_maps_by_index_with_a_length_check(tmp_path: Path) -> None:
    named = resample_bag(write_bag(tmp_path / "named"), load_mapping("mapping/koch_sim.yaml"))
    unnamed = write_bag(tmp_path / "unnamed", names=False)
    with pytest.raises(ConversionError, match=r"empty `name`.*unnamed_joints: by_index"):
        resample_bag(unnamed, load_mapping("mapping/koch_sim.yaml"))

    mapping = load_mapping(by_index_mapping(tmp_path))
    assert mapping.feature("observation.state").unnamed_joints == "by_index"
    episode = resample_bag(unnamed, mapping)
    assert len(episode) == len(named) > 20
    for k in (0, 7, len(episode) - 1):
        for key in ("observation.state", "action"):
            np.testing.assert_array_equal(episode.value(key, k), named.value(key, k))

    short = write_bag(tmp_path / "short", names=False, short_message_at_s=0.5)
    with pytest.raises(ConversionError, match=r"/leader/joint_states.*5 positions.*6 joints"):
        resample_bag(short, mapping)


def test_new_mapping_options_are_checked_as_the_mapping_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"koch_sim.yaml.features.action: unnamed_joints 'sometimes' is unknown; "
                                          r"use one of \('refuse', 'by_index'\)"):
        load_mapping("mapping/koch_sim.yaml", ["features.action.unnamed_joints=sometimes"])
    with pytest.raises(ConfigError, match=r"koch_sim.yaml.features.action: zero_stamps 'now' is unknown; "
                                          r"use one of \('refuse', 'receive_time'\)"):
        load_mapping("mapping/koch_sim.yaml", ["features.action.zero_stamps=now"])
    text = (config_dir() / "mapping/koch_sim.yaml").read_text().replace(
        "    topic: head_image", "    topic: head_image\n    unnamed_joints: by_index")
    (tmp_path / "image.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"features.observation.images.head.unnamed_joints only applies to"):
        load_mapping(tmp_path / "image.yaml")


def test_zero_header_stamps_fall_back_to_receive_time_when_configured(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "zero", zero_stamps="/leader/joint_states")
    with pytest.raises(BagReadError, match=r"/leader/joint_states has messages with an unset header.stamp.*"
                                           r"zero_stamps: receive_time"):
        resample_bag(bag, load_mapping("mapping/koch_sim.yaml"))
    mapping = load_mapping("mapping/koch_sim.yaml", ["features.action.zero_stamps=receive_time"])
    episode = resample_bag(bag, mapping)
    assert episode.refused is None and len(episode) > 20
    quality = episode.quality()
    assert quality["streams"]["action"]["receive_stamped"] == int(DURATION_S * STATE_HZ)
    assert quality["streams"]["observation.state"]["receive_stamped"] == 0
    # The leader's messages sit at their receive times (2 ms after capture) on the header clock of the others.
    t0 = 0.004  # the image stream starts last
    for k in (0, 10, len(episode) - 1):
        t = t0 + k / 30
        leader_t = np.floor((t - LATENCY_S) * STATE_HZ + 1e-6) / STATE_HZ
        np.testing.assert_allclose(episode.value("action", k), joints_at(leader_t, 1), atol=1e-6)


# --- batches: a bad bag is refused, the others convert ---------------------------------------------


def test_bag_root_converts_the_good_and_repairable_bags_and_refuses_the_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's acceptance test: under --bag-root, good bags, a bag whose JointState has no names
    (mapped by index; written by a foreign tool, so without CRCs), a bag without metadata.yaml, a
    corrupt bag and a bag that fails half-way (a short message): the first three convert, the bad two
    are refused with their reasons, and the exit status says "partial". --strict writes nothing."""
    root = tmp_path / "bags"
    write_bag(root / "ep0_corrupt")
    corrupt_middle(root / "ep0_corrupt")
    write_bag(root / "ep1_good")
    write_bag(root / "ep2_unnamed", names=False, recorder=False)
    (write_bag(root / "ep3_no_metadata") / "metadata.yaml").unlink()
    write_bag(root / "ep4_short", names=False, short_message_at_s=0.7)
    mapping = by_index_mapping(tmp_path)
    output = tmp_path / "out" / "ds"
    # Work folders of earlier conversions: one of a dead process (swept), one of a live one (kept).
    output.parent.mkdir()
    dead = output.parent / f".ds.converting-{_dead_pid()}"
    live = output.parent / f".ds.converting-{os.getppid()}"
    for folder in (dead, live):
        (folder / "bags").mkdir(parents=True)
    command = ["--bag-root", str(root), "--mapping", str(mapping), "--output", str(output), "--vcodec", "h264"]

    assert cli_main([*command, "--strict"]) == 1
    err = capsys.readouterr().err
    assert "ep0_corrupt" in err and "CRC" in err
    assert not output.exists(), "--strict: nothing written"
    assert not dead.exists() and live.exists(), "a dead process's work folder is swept, a live one's kept"
    assert sorted(p.name for p in output.parent.iterdir()) == [live.name], "no work folder of ours left"

    assert cli_main(command) == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("REFUSED ep0_corrupt:") and "CRC" in line for line in out), out
    assert any(line.startswith("REFUSED ep4_short:") and "5 positions" in line for line in out), out
    assert out[-1].startswith("partial: 3 of 5 bag(s) converted, 2 refused"), out[-1]
    dataset = LeRobotDataset("local/koch_sim", root=output)
    assert dataset.num_episodes == 3
    report = {Path(e["bag"]).name: e for e in json.loads((output / QUALITY_REPORT).read_text())["episodes"]}
    assert list(report) == ["ep0_corrupt", "ep1_good", "ep2_unnamed", "ep3_no_metadata", "ep4_short"]
    assert "CRC" in report["ep0_corrupt"]["refused"] and "5 positions" in report["ep4_short"]["refused"]
    assert [report[b]["refused"] for b in ("ep1_good", "ep2_unnamed", "ep3_no_metadata")] == [None] * 3
    assert report["ep1_good"]["integrity"]["verified"]
    assert not report["ep2_unnamed"]["integrity"]["verified"], "no CRCs: said so"
    assert any("metadata.yaml" in w for w in report["ep3_no_metadata"]["integrity"]["warnings"])
    # By index and without metadata.yaml, the same frames as the good bag (the same recording).
    frames = int(dataset.meta.episodes["length"][0])
    assert list(dataset.meta.episodes["length"][:]) == [frames] * 3
    for k in (0, frames - 1):
        for episode in (1, 2):
            for key in ("observation.state", "action"):
                np.testing.assert_array_equal(dataset[episode * frames + k][key], dataset[k][key])
    assert sorted(p.name for p in output.parent.iterdir()) == sorted(["ds", live.name])
    shutil.rmtree(live)


def _dead_pid() -> int:
    """A process id that no process has now."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1
