"""rosbag2 episode writer (ROS-free): serialized CDR bytes in, a finished bag directory out.

Wraps `rosbags.rosbag2.Writer`. A bag being written lives at
`<output_dir>/.<name>.partial/<name>` and is renamed to `<output_dir>/<name>` only by
`close()`, so a crash or an abort never leaves a half-written bag under the final name. The
storage file inside is named after the bag's final name from the start (`<name>.mcap`), so
the rename does not invalidate metadata.yaml.

MCAP bags carry the CRCs `ros2 bag record`'s MCAP plugin writes (`CrcMcapWriter`), which rosbags'
writer leaves at 0 ("not available"): without them, bytes damaged on disk or in a copy would be
converted into wrong frames without a word.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import CompressionMode, StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
PARTIAL_SUFFIX = ".partial"


class BagWriterError(RuntimeError):
    pass


# MCAP layout (https://mcap.dev/spec): a record is opcode (1 byte), body length (8), body.
CHUNK_CRC_AT = 1 + 8 + 3 * 8  # Chunk body: message_start_time, message_end_time, uncompressed_size, then the CRC
DATA_END_SIZE = 1 + 8 + 4  # DataEnd: data_section_crc, right before the summary section
FOOTER_SIZE = 1 + 8 + 8 + 8 + 4  # Footer: summary_start, summary_offset_start, summary_crc; then the magic
MAGIC_SIZE = 8


class _Spool(io.BytesIO):
    """Stands in for the bag file while rosbags writes one chunk, so the chunk's CRC can be put in
    before its bytes go to the file; `tell()` answers file offsets, which rosbags puts in its index."""

    def __init__(self, offset: int) -> None:
        super().__init__()
        self.offset = offset

    def tell(self) -> int:
        return self.offset + super().tell()


class CrcMcapWriter(McapWriter):
    """rosbags' MCAP storage with the CRCs `ros2 bag record` writes: each Chunk's uncompressed_crc
    (CRC-32 of its records, which rosbags' and the mcap readers check as they read the chunk), the
    DataEnd's data_section_crc (CRC-32 of the file up to that record) and the Footer's summary_crc.

    One hook each: a chunk is written into a `_Spool` and fixed there; the file-wide CRCs are kept
    running as chunks go out and written into the finished file by `close` (no second read of the data)."""

    def __init__(self, path: Path, compression: CompressionMode) -> None:
        super().__init__(path, compression)
        self.bio.flush()
        self._data_crc = zlib.crc32(self.path.read_bytes())  # the magic and Header record written so far
        self._data_size = self.bio.tell()

    def close_chunk(self) -> None:
        with self.chunk.bio.getbuffer() as records:
            crc = zlib.crc32(records)
        out = self.bio
        spool = _Spool(out.tell())
        self.bio = cast(Any, spool)
        try:
            super().close_chunk()
        finally:
            self.bio = out
        with spool.getbuffer() as data:
            struct.pack_into("<I", data, CHUNK_CRC_AT, crc)
            out.write(data)
            self._data_crc = zlib.crc32(data, self._data_crc)
            self._data_size += len(data)

    def close(self, version: int, metadata: str) -> None:
        super().close(version, metadata)
        with self.path.open("r+b") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(size - MAGIC_SIZE - FOOTER_SIZE)
            _, _, summary_start, _, _ = struct.unpack("<BQQQI", f.read(FOOTER_SIZE))
            data_end = summary_start - DATA_END_SIZE
            f.seek(self._data_size)  # what rosbags wrote after the last chunk: its metadata record
            data_crc = zlib.crc32(f.read(data_end - self._data_size), self._data_crc)
            f.seek(summary_start - 4)
            f.write(struct.pack("<I", data_crc))
            f.seek(summary_start)
            summary_crc = zlib.crc32(f.read(size - MAGIC_SIZE - 4 - summary_start))
            f.write(struct.pack("<I", summary_crc))


class _CrcWriter(Writer):
    """rosbags' bag writer with `CrcMcapWriter` as its MCAP storage."""

    STORAGE_PLUGINS: Mapping[StoragePlugin, Any] = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: CrcMcapWriter}


def default_typestore() -> Typestore:
    """Message definitions of the ROS 2 distribution this project targets (Kilted, same as Jazzy
    for the messages it records)."""
    return get_typestore(Stores.ROS2_KILTED)


def next_bag_path(output_dir: Path, prefix: str) -> Path:
    """`<output_dir>/<prefix>_<NNNN>` with NNNN one past the highest index in use, finished or
    partial, so episode numbers follow recording order even after a deletion."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", prefix):
        raise BagWriterError(f"episode prefix {prefix!r} must contain only letters, digits, '_' and '-'")
    pattern = re.compile(rf"^\.?{re.escape(prefix)}_(\d+)(?:{re.escape(PARTIAL_SUFFIX)})?$")
    used = [int(m.group(1)) for p in output_dir.glob("*") if (m := pattern.match(p.name))]
    return output_dir / f"{prefix}_{max(used, default=-1) + 1:04d}"


class BagWriter:
    """One rosbag2 bag: `open()`, `add_topic()` per topic, `write()` per message, `close()`."""

    def __init__(self, final_path: Path, storage: str = "mcap", typestore: Typestore | None = None) -> None:
        if storage not in STORAGES:
            raise BagWriterError(f"storage {storage!r} is not supported; use one of {sorted(STORAGES)}")
        self.final_path = Path(final_path)
        self.partial_dir = self.final_path.parent / f".{self.final_path.name}{PARTIAL_SUFFIX}"
        self.storage = storage
        self.typestore = typestore or default_typestore()
        self.counts: dict[str, int] = {}
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def open(self) -> None:
        if self.final_path.exists():
            raise BagWriterError(f"{self.final_path} already exists; choose another name or move it away")
        if self.partial_dir.exists():
            raise BagWriterError(
                f"{self.partial_dir} exists (left by an interrupted recording); move or delete it first"
            )
        self.partial_dir.mkdir(parents=True)
        writer = _CrcWriter(
            self.partial_dir / self.final_path.name,
            version=Writer.VERSION_LATEST,
            storage_plugin=STORAGES[self.storage],
        )
        writer.open()
        self._writer = writer

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[Qos] = ()) -> None:
        writer = self._require_open()
        if topic in self._connections:
            raise BagWriterError(f"topic {topic} was already added to {self.final_path}")
        if msgtype not in self.typestore.fielddefs:
            raise BagWriterError(
                f"message type {msgtype!r} for {topic} is unknown to the rosbags typestore; "
                "spell it like 'sensor_msgs/msg/JointState'"
            )
        self._connections[topic] = writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=list(offered_qos)
        )
        self.counts[topic] = 0

    def write(self, topic: str, receive_time_ns: int, data: bytes | memoryview) -> None:
        """Store one message's serialized CDR bytes unchanged, stamped with its receive time."""
        writer = self._require_open()
        connection = self._connections.get(topic)
        if connection is None:
            raise BagWriterError(f"topic {topic} was not added to {self.final_path}; call add_topic first")
        writer.write(connection, int(receive_time_ns), data)
        self.counts[topic] += 1

    def close(self) -> Path:
        """Finish the bag (index and metadata.yaml) and move it to its final name."""
        writer = self._require_open()
        self._writer = None
        writer.close()
        (self.partial_dir / self.final_path.name).rename(self.final_path)
        self.partial_dir.rmdir()
        return self.final_path

    def abort(self, discard: bool = False) -> None:
        """Stop writing; the partial bag stays under its `.partial` name unless `discard`."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()
        if discard and self.partial_dir.exists():
            shutil.rmtree(self.partial_dir)

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _require_open(self) -> Writer:
        if self._writer is None:
            raise BagWriterError(f"bag {self.final_path} is not open")
        return self._writer
