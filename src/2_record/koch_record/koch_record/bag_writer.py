"""rosbag2 episode writer (ROS-free): serialized CDR bytes in, a finished bag directory out.

Wraps `rosbags.rosbag2.Writer`. A bag being written lives at
`<output_dir>/.<name>.partial/<name>` and is renamed to `<output_dir>/<name>` only by
`close()`, so a crash or an abort never leaves a half-written bag under the final name. The
storage file inside is named after the bag's final name from the start (`<name>.mcap`), so
the rename does not invalidate metadata.yaml.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
PARTIAL_SUFFIX = ".partial"


class BagWriterError(RuntimeError):
    pass


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
        writer = Writer(
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
