"""The recorder's MCAP bags carry the CRCs `ros2 bag record` writes (issue 28, finding 5): rosbags' own
writer stores 0 ("not available") in every Chunk, the DataEnd record and the Footer, so bytes damaged
on disk or in a copy would be read as if they were good. Checked here against the MCAP layout itself
and against rosbags' reader, which verifies a chunk's CRC whenever it is not 0."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.typesys import Stores, get_typestore

from koch_record.bag_writer import BagWriter

TS = get_typestore(Stores.ROS2_KILTED)
MAGIC = b"\x89MCAP0\r\n"
FOOTER = 1 + 8 + 8 + 8 + 4  # opcode, length, summary_start, summary_offset_start, summary_crc


def write_bag(path: Path, recorder: bool = True) -> Path:
    """Joint states and 128x96 noise images for 2 s: about 2.2 MB, so rosbags closes more than one chunk."""
    image = TS.types["sensor_msgs/msg/Image"]
    joint_state = TS.types["sensor_msgs/msg/JointState"]
    stamp = TS.types["builtin_interfaces/msg/Time"]
    header = TS.types["std_msgs/msg/Header"]
    rng = np.random.default_rng(0)
    records = []
    for k in range(60):
        t = 10**18 + k * 33_333_333
        data = rng.integers(0, 256, 96 * 128 * 3, dtype=np.uint8)  # noise: no chunk is all zeros
        msg = image(header=header(stamp=stamp(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam"), height=96,
                    width=128, encoding="rgb8", is_bigendian=0, step=384, data=data)
        records.append(("/cam", "sensor_msgs/msg/Image", t, TS.serialize_cdr(msg, "sensor_msgs/msg/Image")))
        msg = joint_state(header=header(stamp=stamp(sec=t // 10**9, nanosec=t % 10**9), frame_id=""),
                          name=["a"], position=np.array([k / 10]), velocity=np.zeros(0), effort=np.zeros(0))
        records.append(("/js", "sensor_msgs/msg/JointState", t, TS.serialize_cdr(msg, "sensor_msgs/msg/JointState")))
    if recorder:
        with BagWriter(path, storage="mcap", typestore=TS) as bag:
            bag.add_topic("/cam", "sensor_msgs/msg/Image")
            bag.add_topic("/js", "sensor_msgs/msg/JointState")
            for topic, _, t, raw in records:
                bag.write(topic, t, raw)
    else:
        with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
            conns = {t: writer.add_connection(t, m, typestore=TS) for t, m in (("/cam", records[0][1]),
                                                                                ("/js", records[1][1]))}
            for topic, _, t, raw in records:
                writer.write(conns[topic], t, raw)
    return next(path.glob("*.mcap"))


def chunk_crcs(mcap: Path) -> list[tuple[int, int]]:
    """(stored uncompressed_crc, CRC-32 of the chunk's records) of every chunk, found through the summary."""
    data = mcap.read_bytes()
    reader = McapReader(mcap)
    reader.open()
    try:
        out = []
        for chunk in reader.chunks:
            body = chunk.chunk_start_offset + 9
            (stored,) = struct.unpack_from("<I", data, body + 24)
            records_at = body + 40 + len(chunk.compression)
            assert chunk.compression == ""
            out.append((stored, zlib.crc32(data[records_at:records_at + chunk.uncompressed_size])))
        return out
    finally:
        reader.close()


def test_recorded_mcap_has_chunk_data_and_summary_crcs(tmp_path: Path) -> None:
    mcap = write_bag(tmp_path / "bag")
    crcs = chunk_crcs(mcap)
    assert len(crcs) >= 2
    assert all(stored == computed != 0 for stored, computed in crcs), crcs

    data = mcap.read_bytes()
    assert data.startswith(MAGIC) and data.endswith(MAGIC)
    footer = len(data) - len(MAGIC) - FOOTER
    op, length, summary_start, _, summary_crc = struct.unpack_from("<BQQQI", data, footer)
    assert (op, length) == (0x02, FOOTER - 9)
    # DataEnd (opcode 0x0F, 4 bytes) closes the data section, right before the summary.
    data_end = summary_start - 13
    assert struct.unpack_from("<BQ", data, data_end) == (0x0F, 4)
    (data_crc,) = struct.unpack_from("<I", data, data_end + 9)
    assert data_crc == zlib.crc32(data[:data_end]) != 0, "CRC-32 of the file up to the DataEnd record"
    assert summary_crc == zlib.crc32(data[summary_start:len(data) - len(MAGIC) - 4]) != 0

    # Still a bag every reader takes: rosbags reads it back whole, checking each chunk's CRC as it goes.
    with AnyReader([mcap.parent]) as reader:
        assert sum(1 for _ in reader.messages()) == 120


def test_damaged_bytes_in_a_recorded_chunk_fail_its_crc_even_for_rosbags(tmp_path: Path) -> None:
    mcap = write_bag(tmp_path / "bag")
    data = bytearray(mcap.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = np.random.default_rng(1).bytes(4096)
    mcap.write_bytes(bytes(data))
    with pytest.raises(Exception, match="Chunk checksum mismatch"), AnyReader([mcap.parent]) as reader:
        for _ in reader.messages():
            pass


def test_plain_rosbags_writer_leaves_crcs_at_zero(tmp_path: Path) -> None:
    """What bags of other tools look like: the converter reports them as unverified."""
    assert {stored for stored, _ in chunk_crcs(write_bag(tmp_path / "bag", recorder=False))} == {0}
