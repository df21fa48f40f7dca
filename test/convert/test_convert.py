"""Bag -> LeRobot v3.0 conversion against real rosbag2 files (written here and recorded by ROS 2)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from koch_common.config import ConfigError, config_dir, load_config
from koch_common.feature_mapping import FeatureConfig, MappingConfig, load_mapping, resolve
from koch_common.image_codec import to_fields
from koch_common.resample import Align
from koch_common.robot import load_koch
from koch_convert.bag_reader import BagReadError, ImageSpill, read_topics
from koch_convert.cli import main as cli_main
from koch_convert.convert import ConversionError, convert_bags, resample_bag, resample_episodes
from koch_convert.episodes import stream_episode
from koch_record.bag_writer import BagWriter

pytestmark = pytest.mark.video

# Bags recorded by real `ros2 bag record`, kept in ../shared beside the checkout (as on CI).
REAL_BAGS = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "real_bags"
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
FPS = 30
STATE_HZ, IMAGE_HZ, DURATION_S = 50, 30, 1.5
HEIGHT, WIDTH = 96, 128
# Stream start offsets after the bag's first stamp: the image stream starts last, so t0 = 0.010.
FOLLOWER_T0, LEADER_T0, IMAGE_T0 = 0.0, 0.005, 0.010


TASK_TEXT = "reach the red target"

def joint_values(t: np.ndarray | float, arm: int) -> np.ndarray:
    """Known, smooth joint trajectory: value of joint j at time t (s after the bag start)."""
    j = np.arange(6)
    return np.sin(np.multiply.outer(t, 1.0 + j) + arm) * 0.5


def header(stamp_ns: int, frame: str = ""):
    time = TYPESTORE.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=time, frame_id=frame)


def ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def write_episode_bag(path: Path, start_ns: int, seed: int) -> None:
    """A bag as the recorder writes it: follower/leader joint states at 50 Hz with the joint order
    shuffled per message, a 30 Hz rgb8 camera with registered 16UC1 depth, receive times a few ms after
    the header stamps."""
    rng = np.random.default_rng(seed)
    joint_state = TYPESTORE.types["sensor_msgs/msg/JointState"]
    image = TYPESTORE.types["sensor_msgs/msg/Image"]
    names = np.array(load_koch().follower.names)
    messages: list[tuple[str, float, object, str]] = []
    for topic, t0, arm in (
        ("/follower/joint_states", FOLLOWER_T0, 0),
        ("/leader/joint_states", LEADER_T0, 1),
    ):
        for k in range(int(DURATION_S * STATE_HZ)):
            t = t0 + k / STATE_HZ
            order = rng.permutation(6)
            msg = joint_state(
                header=header(start_ns + ns(t)),
                name=list(names[order]),
                position=joint_values(t, arm)[order],
                velocity=np.zeros(6),
                effort=np.zeros(6),
            )
            messages.append((topic, t, msg, "sensor_msgs/msg/JointState"))
    for k in range(int(DURATION_S * IMAGE_HZ)):
        t = IMAGE_T0 + k / IMAGE_HZ
        rgb = np.full((HEIGHT, WIDTH, 3), (k * 5) % 256, dtype=np.uint8)
        f = to_fields(rgb, "rgb8")
        msg = image(
            header=header(start_ns + ns(t), "head_camera"),
            height=f.height,
            width=f.width,
            encoding=f.encoding,
            is_bigendian=f.is_bigendian,
            step=f.step,
            data=np.frombuffer(f.data, dtype=np.uint8),
        )
        messages.append(("/head/color/image_raw", t, msg, "sensor_msgs/msg/Image"))
        d = to_fields(np.full((HEIGHT, WIDTH), 450 + k, dtype=np.uint16), "16UC1")  # registered depth, same stamp
        depth = image(header=header(start_ns + ns(t), "head_camera"), height=d.height, width=d.width,
                      encoding=d.encoding, is_bigendian=d.is_bigendian, step=d.step,
                      data=np.frombuffer(d.data, dtype=np.uint8))
        messages.append(("/head/depth/image_raw", t, depth, "sensor_msgs/msg/Image"))
    # the sim's task text, as sim_world publishes it (no header: it takes the receive time)
    messages.append(("/sim/task", 0.0, TYPESTORE.types["std_msgs/msg/String"](data=TASK_TEXT), "std_msgs/msg/String"))
    # Written in receive order; latency is random so the bag order differs from header order.
    receive = [t + rng.uniform(0.001, 0.004) for _, t, _, _ in messages]
    with BagWriter(path, storage="mcap", typestore=TYPESTORE) as bag:
        for topic, msgtype in {(m[0], m[3]) for m in messages}:
            bag.add_topic(topic, msgtype)
        for i in np.argsort(receive):
            topic, _, msg, msgtype = messages[i]
            bag.write(topic, start_ns + ns(receive[i]), TYPESTORE.serialize_cdr(msg, msgtype))


@pytest.fixture(scope="module")
def episode_bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bags")
    bags = [root / f"episode_{i:04d}" for i in range(2)]
    for i, bag in enumerate(bags):
        write_episode_bag(bag, start_ns=(1_700_000_000 + 10 * i) * 10**9, seed=i)
    return bags


@pytest.fixture(scope="module")
def dataset_root(episode_bags: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("datasets") / "koch_sim"
    code = cli_main(
        ["--bags", *map(str, episode_bags), "--mapping", "mapping/koch_sim.yaml"]
        + ["--output", str(output), "--repo-id", "local/koch_sim", "--vcodec", "h264"]
    )
    assert code == 0
    return output


def test_mapping_resolves_topics_and_joint_order() -> None:
    mapping = load_mapping("mapping/koch_sim.yaml")
    assert mapping.fps == FPS and mapping.clock == "header"
    assert mapping.feature("observation.state").topic == "/follower/joint_states"
    assert mapping.feature("action").joint_names == tuple(load_koch().leader.names)
    assert mapping.feature("observation.images.head").is_image
    with pytest.raises(ConfigError, match="clock 'bag' is unknown"):
        load_mapping("mapping/koch_sim.yaml", ["clock=bag"])
    with pytest.raises(ConfigError, match="expected 'follower', 'leader' or a list"):
        load_mapping("mapping/koch_sim.yaml", ["features.action.joints=both"])
    assert mapping.feature("action").stream.align is Align.HOLD
    with pytest.raises(ConfigError, match=r"features.action.align 'nearest' is unknown; use one of \('hold'"):
        load_mapping("mapping/koch_sim.yaml", ["features.action.align=nearest"])


def test_a_mapping_with_the_old_policy_key_is_told_the_new_name(tmp_path: Path) -> None:
    old = tmp_path / "old_mapping.yaml"
    source = (config_dir() / "mapping/koch_sim.yaml").read_text()
    old.write_text(source.replace("    align: hold", "    policy: hold", 1))
    with pytest.raises(ConfigError, match="features.observation.state.policy is now called `align`"):
        load_mapping(old)
    with pytest.raises(ConfigError, match="features.action.policy is now called `align`"):
        load_mapping("mapping/koch_sim.yaml", ["features.action.policy=drop"])


CODEC_NOISE = ("[libx264 @", "Auto-inserting h264_mp4toannexb", "Starting second pass")


def _bag_to_lerobot(bags: list[Path], output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The installed bag_to_lerobot in a process of its own: ffmpeg prints to the process's stderr."""
    from koch_bringup.launcher import find_executable

    command = [str(find_executable("koch_convert", "bag_to_lerobot")), "--bags", *map(str, bags),
               "--output", str(output), "--vcodec", "h264", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_codec_logs_are_quiet_unless_verbose(episode_bags: list[Path], tmp_path: Path) -> None:
    """Two bags: each encodes a video (x264's statistics) and joining them remuxes it (muxer notes)."""
    quiet = _bag_to_lerobot(episode_bags, tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if any(noise in line for noise in CODEC_NOISE)]
    bars = quiet.stderr.replace("\r", "\n")
    assert "converting" in bars and "joining 2 datasets" in bars  # one bar per stage
    assert "Copy data and videos" not in bars  # LeRobot's own bars of the joining stage
    verbose = _bag_to_lerobot(episode_bags, tmp_path / "verbose", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "[libx264 @" in verbose.stderr and "Auto-inserting h264_mp4toannexb" in verbose.stderr


def test_dataset_has_one_episode_per_bag_on_the_exact_grid(dataset_root: Path) -> None:
    dataset = LeRobotDataset("local/koch_sim", root=dataset_root)
    # Grid from t0 = 0.010 (first all-fresh time) to the last image at 0.010 + 44/30.
    expected_frames = 45
    assert dataset.num_episodes == 2
    assert dataset.num_frames == 2 * expected_frames
    assert dataset.fps == FPS
    assert dataset.meta.robot_type == "koch"
    assert dataset.meta.names["observation.state"] == load_koch().follower.names
    assert tuple(dataset.meta.features["observation.images.head"]["shape"]) == (HEIGHT, WIDTH, 3)

    for k in (0, 1, 17, 44):
        t = IMAGE_T0 + k / FPS
        # Hold: the latest joint sample stamped at or before the frame time, in koch.yaml order.
        follower_t = FOLLOWER_T0 + np.floor((t - FOLLOWER_T0) * STATE_HZ) / STATE_HZ
        leader_t = LEADER_T0 + np.floor((t - LEADER_T0) * STATE_HZ) / STATE_HZ
        for episode in range(2):
            item = dataset[episode * expected_frames + k]
            assert int(item["episode_index"]) == episode and int(item["frame_index"]) == k
            assert float(item["timestamp"]) == pytest.approx(k / FPS)
            np.testing.assert_allclose(item["observation.state"], joint_values(follower_t, 0), atol=1e-6)
            np.testing.assert_allclose(item["action"], joint_values(leader_t, 1), atol=1e-6)
            # Each frame shows the image stamped at its own time (video compression: tolerance).
            pixel_mean = float(item["observation.images.head"].mean()) * 255
            assert pixel_mean == pytest.approx((k * 5) % 256, abs=3)


def test_dataloader_batches_have_policy_shapes(dataset_root: Path) -> None:
    dataset = LeRobotDataset("local/koch_sim", root=dataset_root)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0)))
    assert batch["observation.state"].shape == (4, 6) and batch["observation.state"].dtype == torch.float32
    assert batch["action"].shape == (4, 6)
    assert batch["observation.images.head"].shape == (4, 3, HEIGHT, WIDTH)
    assert batch["task"] == ["reach the red target"] * 4


def test_images_over_the_memory_budget_wait_in_a_spill_file_with_the_same_frames(
    episode_bags: list[Path], dataset_root: Path, tmp_path: Path
) -> None:
    mapping = load_mapping("mapping/koch_sim.yaml")
    spill = ImageSpill(tmp_path / "spill", budget_bytes=3 * HEIGHT * WIDTH * 3)  # about 3 images in memory
    (spilled,) = resample_episodes(episode_bags[0], mapping, spill)
    assert 0 < spill.held_bytes <= spill.budget_bytes < spill.spilled_bytes
    assert list((tmp_path / "spill").iterdir()) == []  # unlinked at once: nothing is left behind
    in_memory = resample_bag(episode_bags[0], mapping)
    assert len(spilled) == len(in_memory) == 45
    for i in range(len(in_memory)):
        expected = in_memory.frame(i)
        for key, value in spilled.frame(i).items():
            np.testing.assert_array_equal(value, expected[key])

    output = tmp_path / "spilled_dataset"
    code = cli_main(
        ["--bags", str(episode_bags[0]), "--mapping", "mapping/koch_sim.yaml", "--image-memory-gb", "0"]
        + ["--output", str(output), "--repo-id", "local/koch_sim", "--vcodec", "h264"]
    )
    assert code == 0
    written = LeRobotDataset("local/koch_sim", root=output)
    reference = LeRobotDataset("local/koch_sim", root=dataset_root)  # the same bag converted in memory
    assert written.num_frames == 45
    for k in (0, 17, 44):
        for key in ("observation.state", "action", "observation.images.head"):
            torch.testing.assert_close(written[k][key], reference[k][key])


def test_a_streamed_bag_holds_a_few_images_not_the_whole_bag(episode_bags: list[Path], tmp_path: Path) -> None:
    """convert_bags streams this bag: each frame's images are released once written, so a memory
    budget of six images (of the bag's 45) is never exceeded and nothing goes to the spill file."""
    mapping = load_mapping("mapping/koch_sim.yaml")
    spill = ImageSpill(tmp_path / "spill", budget_bytes=6 * (HEIGHT * WIDTH * 3 + 100))
    held: list[int] = []

    def write(episode, k: int) -> None:
        episode.frame(k)
        held.append(spill.held_bytes)

    episode = stream_episode(episode_bags[0], mapping, spill, write)
    assert len(episode) == len(held) == 45 and episode.refused is None
    assert spill.spilled_bytes == 0 and max(held) <= spill.budget_bytes


def test_existing_dataset_is_not_overwritten(dataset_root: Path, episode_bags: list[Path]) -> None:
    mapping = load_mapping("mapping/koch_sim.yaml")
    with pytest.raises(ConversionError, match="already exists"):
        convert_bags(episode_bags[:1], mapping, dataset_root, "local/koch_sim", vcodec="h264")


def test_missing_topic_lists_present_topics_and_leaves_nothing(
    tmp_path: Path, episode_bags: list[Path]
) -> None:
    # Feature keys contain dots, so edit the loaded config rather than use a key=value override.
    config = load_config(MappingConfig, "mapping/koch_sim.yaml")
    config.features["observation.images.head"].topic = "/wrist/image"
    output = tmp_path / "out" / "ds"
    with pytest.raises(BagReadError) as err:
        convert_bags(episode_bags, resolve(config), output, "local/x", vcodec="h264")
    message = str(err.value)
    assert "/wrist/image" in message
    for present in ("/follower/joint_states", "/leader/joint_states", "/head/color/image_raw"):
        assert present in message

    # The second bag fails after the first episode was written: the half-built dataset goes away.
    real_bag = copy_real_bag("jazzy_mcap_joint_states", tmp_path)
    with pytest.raises(BagReadError, match=r"topics present: /imu/data .*, /joint_states"):
        convert_bags(
            [episode_bags[0], real_bag],
            load_mapping("mapping/koch_sim.yaml"),
            output,
            "local/x",
            vcodec="h264",
        )
    assert list(output.parent.iterdir()) == [], "no dataset and no staging directory left behind"


def test_mapped_custom_type_without_definition_is_a_clear_error(tmp_path: Path) -> None:
    """A custom message type is fine while unmapped; mapped, its definition must come from the bag."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg

    custom = "vendor_msgs/msg/Gripper"
    vendor = get_typestore(Stores.EMPTY)
    vendor.register(get_types_from_msg("float32 opening", custom))
    for storage in (StoragePlugin.SQLITE3, StoragePlugin.MCAP):
        bag = tmp_path / f"custom_{storage.name.lower()}"
        with Writer(bag, version=8, storage_plugin=storage) as writer:
            gripper = writer.add_connection("/gripper", custom, msgdef="float32 opening",
                                            rihs01=vendor.hash_rihs01(custom))
            writer.write(gripper, 1_000_000_000, vendor.serialize_cdr(vendor.types[custom](opening=0.5), custom))
        if storage == StoragePlugin.MCAP:
            (stream,) = read_topics(bag, {"/gripper": custom}, clock="receive").values()
            assert stream.messages[0].opening == 0.5
            continue
        # As a recorder that stores no definitions would have written it (sqlite3 before Iron).
        with sqlite3.connect(next(bag.glob("*.db3"))) as db:
            db.execute("DELETE FROM message_definitions")
        with pytest.raises(BagReadError, match=r"/gripper has type vendor_msgs/msg/Gripper, whose definition "
                                               r"is neither in the bag nor .* record with MCAP"):
            read_topics(bag, {"/gripper": custom}, clock="receive")


def test_missing_joint_name_is_a_clear_error(episode_bags: list[Path]) -> None:
    mapping = load_mapping("mapping/koch_sim.yaml", ["features.action.joints=[shoulder_pan, thumb]"])
    with pytest.raises(ConversionError, match=r"lacks joint\(s\) \['thumb'\].*shoulder_pan"):
        resample_bag(episode_bags[0], mapping)


def copy_real_bag(name: str, tmp_path: Path) -> Path:
    bag = tmp_path / name
    shutil.copytree(REAL_BAGS / name, bag)
    bag.chmod(0o755)
    return bag


def test_real_jazzy_mcap_joint_states_resample_on_header_clock(tmp_path: Path) -> None:
    bag = copy_real_bag("jazzy_mcap_joint_states", tmp_path)
    joints = ["arm_1_link_joint", "arm_2_link_joint", "arm_3_link_joint", "gripper_link_joint"]
    config = MappingConfig(
        fps=10,
        clock="header",
        task="drive around",
        features={
            "observation.state": FeatureConfig(
                topic="/joint_states", type="sensor_msgs/msg/JointState", joints=joints, max_staleness_s=0.1
            )
        },
    )
    mapping = resolve(config)
    episode = resample_bag(bag, mapping)

    raw = read_topics(bag, {"/joint_states": "sensor_msgs/msg/JointState"})["/joint_states"]
    assert len(raw.stamps_ns) == 1866
    assert raw.stamps_ns[0] == 101_550_000_000, "header stamps (sim time), not wall-clock receive times"
    stamps_s = (np.array(raw.stamps_ns) - raw.stamps_ns[0]) / 1e9
    assert len(episode) == (raw.stamps_ns[-1] - raw.stamps_ns[0]) // 100_000_000 + 1, "10 fps over the bag"
    for k in (0, 5, 333, len(episode) - 1):
        t = episode.frame_times_s[k]
        held = raw.messages[int(np.searchsorted(stamps_s, t, side="right")) - 1]
        expected = [held.position[list(held.name).index(j)] for j in joints]
        np.testing.assert_allclose(episode.value("observation.state", k), expected, rtol=1e-6)
        assert episode.samples["observation.state"][k].stamp_s <= t
    passed: list[np.ndarray] = []  # as convert_bags reads this bag: each frame passed on, then released
    streamed = stream_episode(bag, mapping, None, lambda e, k: passed.append(e.value("observation.state", k)))
    assert len(streamed) == len(passed) == len(episode) and streamed.refused is None
    for k in (0, 5, 333, len(episode) - 1):
        np.testing.assert_array_equal(passed[k], episode.value("observation.state", k))

    with pytest.raises(
        BagReadError, match=r"no topic\(s\) \['/camera/image_raw'\].*/imu/data.*/joint_states"
    ):
        read_topics(bag, {"/camera/image_raw": "sensor_msgs/msg/Image"})


@pytest.mark.parametrize("name", ["split_sqlite3_wbag", "split_mcap_wbag"])
def test_real_split_bags_read_across_all_files(tmp_path: Path, name: str) -> None:
    bag = copy_real_bag(name, tmp_path)
    with AnyReader([bag], default_typestore=TYPESTORE) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert len(reader.connections) >= 8
    streams = read_topics(bag, topics, clock="receive")
    assert sum(len(s.messages) for s in streams.values()) == 6074
    assert len(streams["AAA"].messages) == 804
    assert all(isinstance(m.data, str) for m in streams["HHH"].messages)
    with pytest.raises(BagReadError, match="has type std_msgs/msg/String, expected sensor_msgs/msg/Image"):
        read_topics(bag, {"AAA": "sensor_msgs/msg/Image"}, clock="receive")


def test_parity_offline_frames_equal_live_assembly(episode_bags: list[Path]) -> None:
    """The converter's frames equal what the policy node's runner assembles from the same messages,
    fed one by one in arrival (receive) order, observing each frame time once every message that
    arrived by then (plus the bag's worst transport delay) has been pushed."""
    from koch_common.safety import SafetyLimits
    from koch_policy.policy_node import decode_image  # the live node's own image decoding
    from koch_policy.runner import PolicyRunner

    mapping = load_mapping("mapping/koch_sim.yaml")
    bag = episode_bags[1]
    episode = resample_bag(bag, mapping)
    koch = load_koch()
    runner = PolicyRunner(
        lambda observation: np.zeros((1, 6)),
        {f.key: f.stream for f in mapping.features},
        SafetyLimits.for_arm(koch.follower, koch.safety),
        FPS,
        1,
    )
    by_topic = {f.topic: f for f in mapping.features}
    with AnyReader([bag], default_typestore=TYPESTORE) as reader:
        arrivals = [(recv, c.topic, reader.deserialize(raw, c.msgtype)) for c, recv, raw in reader.messages()
                    if c.topic in by_topic]
    t_ref_ns = min(
        int(m.header.stamp.sec) * 10**9 + int(m.header.stamp.nanosec) for _, topic, m in arrivals if topic in by_topic
    )
    max_delay_s = 0.005  # the synthetic bags' receive times trail the header stamps by 1-4 ms
    frame_times = list(episode.frame_times_s)
    live: list[dict[str, np.ndarray] | None] = []
    try:
        for receive_ns, topic, msg in arrivals:
            while frame_times and (receive_ns - t_ref_ns) / 1e9 > frame_times[0] + max_delay_s:
                live.append(runner.observe(frame_times.pop(0))[0])
            feature = by_topic[topic]
            stamp_s = (int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec) - t_ref_ns) / 1e9
            if feature.is_image:
                value = decode_image(msg)
            else:  # as the node's JointState callback: positions by joint name
                by_name = dict(zip(msg.name, msg.position, strict=True))
                value = np.array([by_name[j] for j in feature.joint_names], dtype=np.float32)
            runner.push(feature.key, stamp_s, value)
        live += [runner.observe(t)[0] for t in frame_times]
    finally:
        runner.close()

    assert len(live) == len(episode) == 45
    for k, observation in enumerate(live):
        assert observation is not None, f"the live path had a stale or missing stream at frame {k}"
        offline = episode.frame(k)
        assert observation.keys() == offline.keys()
        for key, value in offline.items():
            np.testing.assert_array_equal(observation[key], value, err_msg=f"{key} at frame {k}")
