"""Reading rosbag2 directories (sqlite3 or MCAP, split or not, zstd file or message
compression) into time-stamped message lists.

`rosbags.highlevel.AnyReader` does the storage work; message definitions stored in the bag
win, and bags without them (old sqlite3) fall back to the ROS 2 Kilted typestore. Topics the
mapping does not name are never deserialized, so unknown custom types in a bag are harmless
unless mapped. Any storage or decoding failure (a truncated file, a bad chunk) becomes a
`BagReadError` naming the bag, so a caller can refuse it before writing anything.

A bag folder without metadata.yaml (what a killed `ros2 bag record` leaves) is read from its storage
files directly when they describe themselves (MCAP with a summary, sqlite3 with its topics table),
as `ros2 bag reindex` would rebuild it; otherwise the error names the reindex command.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import tempfile
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, BinaryIO

import yaml
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

CLOCKS = ("header", "receive")
# Types whose CDR starts with std_msgs/Header, so header.stamp is readable without deserializing.
HEADER_FIRST_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"})
_CDR_STAMP = {b"\x00\x01": struct.Struct("<iI"), b"\x00\x00": struct.Struct(">iI")}  # CDR LE / BE
METADATA = "metadata.yaml"
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}  # storage files that describe themselves


class BagReadError(ValueError):
    """A bag cannot give what was asked of it; the message says what it has instead."""


# rosbags' deserialize(cdr_bytes, msgtype): fed a memoryview, so slicing off the CDR header copies nothing
Deserializer = Callable[[memoryview, str], Any]


@dataclass
class TopicStream:
    """One topic's messages sorted by the chosen clock's stamp (ns)."""

    topic: str
    msgtype: str
    stamps_ns: list[int] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class LazyMessage:
    """A message kept as its CDR bytes until used: a bag's images are most of its bytes, and
    deserializing them all up front would hold a second copy and delay the first video frame."""

    raw: bytes
    msgtype: str
    deserialize: Deserializer

    def load(self) -> Any:
        # a memoryview: rosbags slices off the CDR header, which on bytes copies the whole image
        return self.deserialize(memoryview(self.raw), self.msgtype)


@dataclass(frozen=True)
class SpilledMessage:
    """A LazyMessage whose CDR bytes went to the bag's spill file (see `ImageSpill`)."""

    file: BinaryIO
    offset: int
    size: int
    msgtype: str
    deserialize: Deserializer

    def load(self) -> Any:
        self.file.flush()  # the converter may load a frame while it still spills the bag's later images
        return self.deserialize(memoryview(os.pread(self.file.fileno(), self.size, self.offset)), self.msgtype)


class ImageSpill:
    """Keeps a bag's image messages in memory up to `budget_bytes`, the rest in a spill file.

    A bag read whole (marker splits, task topics) has all its images read before its first frame
    is written, about 0.9 MB per 640x480 RGB image: a 10-minute bag with three cameras would need
    50 GB. Past the budget the bytes go to an unlinked temporary file in `directory` (the
    converter's work folder beside the output), read back when a frame uses them; the file
    vanishes when the messages are dropped or the process dies. A streamed bag releases images as
    their frames are written, and their bytes leave the budget with them.
    """

    def __init__(self, directory: Path, budget_bytes: int) -> None:
        self.directory = Path(directory)
        self.budget_bytes = budget_bytes
        self.held_bytes = 0
        self.spilled_bytes = 0
        self._file: BinaryIO | None = None

    def _released(self, size: int) -> None:
        self.held_bytes -= size

    def keep(self, raw: bytes, msgtype: str, deserialize: Deserializer) -> LazyMessage | SpilledMessage:
        if self.held_bytes + len(raw) <= self.budget_bytes:
            self.held_bytes += len(raw)
            message = LazyMessage(raw, msgtype, deserialize)
            # A streamed conversion releases images once written: their bytes leave the budget with them.
            weakref.finalize(message, self._released, len(raw))
            return message
        try:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 - lives as long as its messages
            offset = self._file.seek(0, os.SEEK_END)
            self._file.write(raw)
        except OSError as err:
            raise BagReadError(
                f"cannot spill image messages to {self.directory} ({err}): free disk space there, or keep more "
                f"images in memory (--image-memory-gb, now {self.budget_bytes / 2**30:g})"
            ) from err
        self.spilled_bytes += len(raw)
        return SpilledMessage(self._file, offset, len(raw), msgtype, deserialize)


def loaded(msg: Any) -> Any:
    """The message itself, deserializing a LazyMessage or SpilledMessage."""
    return msg.load() if isinstance(msg, LazyMessage | SpilledMessage) else msg


def cdr_header_stamp_ns(raw: bytes) -> int:
    """header.stamp of a CDR-encoded message whose first field is a std_msgs/Header."""
    layout = _CDR_STAMP.get(bytes(raw[:2]))
    if layout is None:
        raise BagReadError(f"message is not CDR (encapsulation {bytes(raw[:2]).hex()}); only ROS 2 bags are supported")
    sec, nanosec = layout.unpack_from(raw, 4)
    return sec * 1_000_000_000 + nanosec


def header_stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def has_header(msg: Any) -> bool:
    return hasattr(msg, "header") and hasattr(msg.header, "stamp")


@dataclass(frozen=True)
class BagFiles:
    """A bag folder's storage: its plugin, its files (in order) and whether metadata.yaml lists them."""

    bag: Path
    storage: str  # mcap | sqlite3
    paths: tuple[Path, ...]
    has_metadata: bool

    @property
    def reindex(self) -> str:
        """The command that rebuilds this bag's metadata.yaml."""
        return f"`ros2 bag reindex {self.bag} -s {self.storage}`"


def _natural(path: Path) -> list[Any]:
    """wbag_2 before wbag_10, as rosbag2 numbers split files."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def bag_files(bag_dir: Path) -> BagFiles:
    """The storage files of a bag folder: as its metadata.yaml lists them, or, without one, its
    self-describing `.mcap` or `.db3` files."""
    bag_dir = Path(bag_dir)
    metadata = bag_dir / METADATA
    if metadata.is_file():
        try:
            info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
            storage = str(info["storage_identifier"])
            paths = tuple(bag_dir / PurePath(name).name for name in info["relative_file_paths"])
        except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
            raise BagReadError(
                f"bag {bag_dir}: {METADATA} cannot be read ({type(err).__name__}: {err}); move it away and "
                f"rebuild it with `ros2 bag reindex {bag_dir} -s mcap` (or `-s sqlite3`), then convert again"
            ) from err
        return BagFiles(bag_dir, storage, paths, has_metadata=True)
    found: dict[str, list[Path]] = {}
    for path in bag_dir.iterdir() if bag_dir.is_dir() else ():
        if path.suffix in STORAGE_SUFFIXES and path.is_file():
            found.setdefault(STORAGE_SUFFIXES[path.suffix], []).append(path)
    if len(found) != 1:
        what = "both .mcap and .db3 files" if found else "no .mcap or .db3 storage file"
        raise BagReadError(
            f"{bag_dir} is not a rosbag2 directory (no {METADATA}, {what}); pass the folder that "
            f"`ros2 bag record` or the recorder created, or rebuild its metadata with `ros2 bag reindex {bag_dir} "
            "-s mcap` (or `-s sqlite3`)"
        )
    ((storage, storage_files),) = found.items()
    return BagFiles(bag_dir, storage, tuple(sorted(storage_files, key=_natural)), has_metadata=False)


def _open(files: BagFiles) -> AnyReader:
    paths = [files.bag] if files.has_metadata else list(files.paths)
    reader = AnyReader(paths, default_typestore=get_typestore(Stores.ROS2_KILTED))
    reader.open()
    return reader


@dataclass(frozen=True)
class ZeroStampFallback:
    """Topics whose zero header stamps take the receive time instead (`zero_stamps: receive_time`),
    and how many messages of each did (for the quality report)."""

    topics: frozenset[str] = frozenset()
    counts: Counter[str] = field(default_factory=Counter)


def read_topics(
    bag_dir: Path, topics: Mapping[str, str | None], clock: str = "header", optional: Collection[str] = (),
    lazy: Collection[str] = (),
    spill: ImageSpill | None = None,
    zero_stamps: ZeroStampFallback | None = None,
) -> dict[str, TopicStream]:
    """Deserialize the requested topics (name -> expected type, None = any type) of one bag.
    Topics in `optional` (task, episode marker) may be absent: they come back with no messages.
    Topics in `lazy` of an image type come back as `LazyMessage`s (use `loaded(msg)`), or as
    `SpilledMessage`s once they exceed the memory budget of `spill`.

    `clock='header'` stamps each message with its header.stamp (capture time); `'receive'`
    with the bag's receive time. Messages without a header (std_msgs/String task or marker
    topics) always take the receive time, and so do zero header stamps on the topics of
    `zero_stamps` (counted there); on other topics a zero stamp is an error. Topics not requested
    are skipped without deserializing.
    """
    with _bag_errors(bag_dir), _opened(Path(bag_dir)) as reader:
        present = _resolve(reader, Path(bag_dir), topics, set(optional))
        pairs: dict[str, list[tuple[int, Any]]] = {name: [] for name in present}
        if present:  # (no topic at all is no read, not a read of everything)
            for topic, stamp, msg in _messages(reader, Path(bag_dir), present, clock, set(lazy), spill, zero_stamps):
                pairs[topic].append((stamp, msg))
    streams: dict[str, TopicStream] = {}
    for name, items in pairs.items():
        # Header stamps may arrive out of order across publishers; offline we can sort them.
        items.sort(key=lambda pair: pair[0])
        streams[name] = TopicStream(name, present[name], [stamp for stamp, _ in items], [msg for _, msg in items])
    for name in set(optional) - set(present):
        streams[name] = TopicStream(topic=name, msgtype="")
    return streams


def require_topics(bag_dir: Path, topics: Mapping[str, str | None]) -> None:
    """BagReadError naming what the bag has when one of `topics` is missing or of another type; reads no message."""
    with _bag_errors(bag_dir), _opened(Path(bag_dir)) as reader:
        _resolve(reader, Path(bag_dir), topics, set())


def iter_messages(
    bag_dir: Path, topics: Mapping[str, str | None], clock: str = "header", lazy: Collection[str] = (),
    spill: ImageSpill | None = None, zero_stamps: ZeroStampFallback | None = None,
) -> Iterator[tuple[str, int, Any]]:
    """`read_topics` as a stream: (topic, stamp_ns, message) in the bag's storage order (receive
    time), so a caller can work while the bag is still being read. Stamps on the header clock are
    not sorted: within a topic they usually rise, and the caller checks that they do."""
    with _bag_errors(bag_dir), _opened(Path(bag_dir)) as reader:
        present = _resolve(reader, Path(bag_dir), topics, set())
        yield from _messages(reader, Path(bag_dir), present, clock, set(lazy), spill, zero_stamps)


@contextlib.contextmanager
def _bag_errors(bag_dir: Path) -> Iterator[None]:
    try:
        yield
    except BagReadError:
        raise
    except Exception as err:  # rosbags/mcap/sqlite/zstd raise many types for a damaged file
        raise BagReadError(
            f"cannot read bag {bag_dir}: it is truncated or corrupt ({type(err).__name__}: {err}); "
            "re-record it or repair it with `ros2 bag reindex`, then convert again"
        ) from err


@contextlib.contextmanager
def _opened(bag_dir: Path) -> Iterator[AnyReader]:
    files = bag_files(bag_dir)
    try:
        reader = _open(files)
    except AnyReaderError as err:
        if not files.has_metadata:
            raise BagReadError(
                f"cannot open bag {bag_dir}: it has no {METADATA} and its storage file(s) cannot be read on their "
                f"own ({err}); rebuild its metadata with {files.reindex} (an MCAP file that ends without its "
                "summary needs `mcap recover` first), then convert again"
            ) from err
        raise BagReadError(
            f"cannot open bag {bag_dir}: it is truncated or corrupt, or its stored message definitions are "
            f"inconsistent ({err}); re-record it or repair it (`ros2 bag reindex`), then convert again"
        ) from err
    try:
        yield reader
    finally:
        reader.close()


def _resolve(reader: AnyReader, bag_dir: Path, topics: Mapping[str, str | None], optional: set[str]) -> dict[str, str]:
    """topic -> type of each requested topic the bag has; an error naming what it has instead
    when a required topic is missing, has another type, or a type without a definition."""
    present = {c.topic: c.msgtype for c in reader.connections}
    topics = {t: ty for t, ty in topics.items() if t in present or t not in optional}
    missing = sorted(set(topics) - set(present))
    if missing:
        listing = ", ".join(f"{t} ({present[t]})" for t in sorted(present)) or "none"
        raise BagReadError(f"bag {bag_dir} has no topic(s) {missing}; topics present: {listing}")
    for name, msgtype in topics.items():
        if msgtype is not None and present[name] != msgtype:
            raise BagReadError(f"bag {bag_dir}: topic {name} has type {present[name]}, expected {msgtype}")
        if present[name] not in reader.typestore.types:
            raise BagReadError(
                f"bag {bag_dir}: topic {name} has type {present[name]}, whose definition is neither in the "
                "bag nor in the ROS 2 typestore; record with MCAP (it stores definitions) or unmap the topic"
            )
    return {name: present[name] for name in topics}


def _messages(
    reader: AnyReader, bag_dir: Path, topics: Mapping[str, str], clock: str, lazy: set[str],
    spill: ImageSpill | None, zero_stamps: ZeroStampFallback | None,
) -> Iterator[tuple[str, int, Any]]:
    if clock not in CLOCKS:
        raise BagReadError(f"clock {clock!r} is unknown; use one of {CLOCKS}")
    zero_stamps = zero_stamps or ZeroStampFallback()
    wanted = [c for c in reader.connections if c.topic in topics]
    deserialize = reader.typestore.deserialize_cdr
    for connection, receive_ns, raw in reader.messages(connections=wanted):
        topic = connection.topic
        if topic in lazy and connection.msgtype in HEADER_FIRST_TYPES:
            stamp = cdr_header_stamp_ns(raw) if clock == "header" else receive_ns
            msg: Any = (LazyMessage(raw, connection.msgtype, deserialize) if spill is None
                        else spill.keep(raw, connection.msgtype, deserialize))
        else:
            msg = reader.deserialize(raw, connection.msgtype)
            stamp = header_stamp_ns(msg) if clock == "header" and has_header(msg) else receive_ns
        if stamp == 0 and topic in zero_stamps.topics:
            stamp = receive_ns
            zero_stamps.counts[topic] += 1
        if stamp == 0:
            raise BagReadError(
                f"bag {bag_dir}: {topic} has messages with an unset header.stamp; fix the publisher, or stamp them "
                f"with their receive time (`zero_stamps: receive_time` on the features of {topic}), or set "
                "`clock: receive` in the mapping"
            )
        yield topic, stamp, msg
