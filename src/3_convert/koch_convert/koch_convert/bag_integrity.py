"""Is a bag's storage intact? Checked before a bag is converted, so damaged bytes are refused with a
reason instead of becoming wrong frames.

MCAP carries CRC-32s (https://mcap.dev/spec): per Chunk, of its uncompressed records; per file, of
the data section (DataEnd) and of the summary (Footer). koch_record's recorder writes all three;
`ros2 bag record` writes what its MCAP storage config asks for (the Jazzy bag in the test fixtures
has a summary CRC only). Every CRC that is present (not 0) is checked here, in one pass over the file; a file
whose records do not chain from its start to its DataEnd is damaged too. A CRC of 0 means "not
written" (rosbags' own writer, some other tools): such a bag is converted, but reported as
unverified, since damaged bytes in it would go unnoticed.

sqlite3 keeps no checksum of its contents: `PRAGMA quick_check` finds a damaged database structure,
not changed bytes inside a message, so sqlite3 bags are reported as unverified as well.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.storage_mcap import decompress

from koch_convert.bag_reader import METADATA, BagFiles, BagReadError, bag_files

MAGIC = b"\x89MCAP0\r\n"
OP_CHUNK, OP_FOOTER, OP_DATA_END = 0x06, 0x02, 0x0F
RECORD_HEAD = struct.Struct("<BQ")  # opcode, body length
FOOTER = struct.Struct("<BQQQI")  # opcode, length, summary_start, summary_offset_start, summary_crc
DATA_END = struct.Struct("<BQI")  # opcode, length, data_section_crc
CHUNK_HEAD = struct.Struct("<QQQII")  # start, end, uncompressed_size, uncompressed_crc, compression length


@dataclass(frozen=True)
class BagIntegrity:
    """What was checked of one bag, for the quality report; `warnings` are printed too."""

    storage: str
    verified: bool  # every stored byte of its messages was checked against a checksum
    detail: str
    warnings: tuple[str, ...] = ()

    def report(self) -> dict[str, Any]:
        return {"storage": self.storage, "verified": self.verified, "detail": self.detail,
                "warnings": list(self.warnings)}


@dataclass
class _McapCounts:
    chunks: int = 0
    chunk_crcs: int = 0
    data_crc: bool = False
    summary_crc: bool = False


class _Damage(Exception):
    """What is wrong with one storage file (worded to follow its name). `unfinished`: the file ends
    early (the recorder was killed), which `mcap recover` can repair; other damage cannot be."""

    def __init__(self, message: str, unfinished: bool = False) -> None:
        super().__init__(message)
        self.unfinished = unfinished


def check_bag(bag_dir: Path) -> BagIntegrity:
    """Check every storage file of a bag; BagReadError (one line, naming the bag and the file) when one
    is damaged."""
    files = bag_files(Path(bag_dir))
    warnings = []
    if not files.has_metadata:
        warnings.append(
            f"no {METADATA} (a recording that did not finish cleanly?): read from its self-describing storage "
            f"file(s), as {files.reindex} would rebuild it"
        )
    missing = [p.name for p in files.paths if not p.is_file()]
    if missing:
        raise BagReadError(f"bag {files.bag}: storage file(s) {missing} listed in {METADATA} are missing")
    if any(p.suffix == ".zstd" for p in files.paths):
        warnings.append("zstd-compressed storage file(s) are not CRC-checked here: damaged bytes may go unnoticed")
        return BagIntegrity(files.storage, False, "file compression: not checked", tuple(warnings))
    if files.storage == "mcap":
        return _check_mcap_bag(files, warnings)
    if files.storage == "sqlite3":
        for path in files.paths:
            _checked(files, path, _quick_check)
        warnings.append("sqlite3 keeps no checksums: damaged message bytes cannot be detected (record MCAP)")
        return BagIntegrity(files.storage, False, f"PRAGMA quick_check ok ({len(files.paths)} file(s))",
                            tuple(warnings))
    raise BagReadError(f"bag {files.bag}: storage {files.storage!r} is not supported; use mcap or sqlite3")


def _check_mcap_bag(files: BagFiles, warnings: list[str]) -> BagIntegrity:
    counts = _McapCounts()
    for path in files.paths:
        _checked(files, path, lambda p: _scan_mcap(p, counts))
    checked = [f"{counts.chunk_crcs} of {counts.chunks} chunk CRCs match"]
    checked += ["the data section CRC matches"] if counts.data_crc else ["no data section CRC"]
    checked += ["the summary CRC matches"] if counts.summary_crc else []
    verified = counts.data_crc or counts.chunk_crcs == counts.chunks > 0
    if not verified:
        warnings.append(
            f"no CRC on {counts.chunks - counts.chunk_crcs} of {counts.chunks} chunks and no data section CRC: "
            "damaged bytes cannot be detected (koch_record's recorder writes them; `ros2 bag record` does with a "
            "storage config that has `noChunkCRC: false` or `enableDataCRC: true`)"
        )
    return BagIntegrity(files.storage, verified, "; ".join(checked), tuple(warnings))


def _checked(files: BagFiles, path: Path, check: Any) -> None:
    try:
        check(path)
    except _Damage as err:
        if not err.unfinished:
            fix = "its bytes changed after it was recorded (disk, copy): convert an intact copy or re-record it"
        elif files.has_metadata:
            fix = "repair the file with `mcap recover`, then convert again"
        else:
            fix = f"it has no {METADATA} either: `mcap recover` the file, then rebuild the bag with {files.reindex}"
        state = "truncated" if err.unfinished else "corrupt"
        raise BagReadError(f"bag {files.bag} is {state}: {path.name} {err}; {fix}") from None
    except OSError as err:
        raise BagReadError(f"bag {files.bag}: cannot read {path.name} ({err})") from err


def _quick_check(path: Path) -> None:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as db:
            result = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as err:
        raise _Damage(f"is not a readable sqlite3 database ({err})") from None
    if result != ["ok"]:
        raise _Damage(f"fails PRAGMA quick_check ({'; '.join(map(str, result[:3]))})")


def _scan_mcap(path: Path, counts: _McapCounts) -> None:
    """Walk the data section record by record up to its DataEnd, checking each chunk's CRC (and the
    data section's and summary's, when written); CRC-less chunks are skipped over unread."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise _Damage("does not start with the MCAP magic")
        footer_at = size - len(MAGIC) - FOOTER.size
        if footer_at < len(MAGIC) or _read_at(f, size - len(MAGIC), len(MAGIC)) != MAGIC:
            raise _Damage("ends without its summary and footer (the recorder did not finish it)", unfinished=True)
        op, length, summary_start, _, summary_crc = FOOTER.unpack(_read_at(f, footer_at, FOOTER.size))
        if (op, length) != (OP_FOOTER, FOOTER.size - RECORD_HEAD.size) or not 0 <= summary_start <= footer_at:
            raise _Damage("has a damaged footer")
        data_end = (summary_start or footer_at) - DATA_END.size
        if data_end < len(MAGIC):
            raise _Damage("has a damaged footer")
        op, length, data_crc = DATA_END.unpack(_read_at(f, data_end, DATA_END.size))
        if (op, length) != (OP_DATA_END, 4):
            raise _Damage(f"has no DataEnd record where its footer says (byte {data_end})")
        if summary_start and summary_crc:
            summary = _read_at(f, summary_start, size - len(MAGIC) - 4 - summary_start)
            if zlib.crc32(summary) != summary_crc:
                raise _Damage("fails its summary CRC check (the index of its chunks is damaged)")
            counts.summary_crc = True
        running = zlib.crc32(MAGIC) if data_crc else None
        offset = len(MAGIC)
        f.seek(offset)
        while offset < data_end:
            head = f.read(RECORD_HEAD.size)
            op, length = RECORD_HEAD.unpack(head)
            end = offset + RECORD_HEAD.size + length
            too_short = op == OP_CHUNK and length < CHUNK_HEAD.size + 8
            if op in (0, OP_FOOTER, OP_DATA_END) or end > data_end or too_short:
                raise _Damage(f"has a damaged record at byte {offset} (opcode {op:#04x}, length {length})")
            if op == OP_CHUNK:
                counts.chunks += 1
                start = f.read(CHUNK_HEAD.size)
                crc = CHUNK_HEAD.unpack(start)[3]
                if crc or running is not None:
                    body = start + f.read(length - CHUNK_HEAD.size)
                    if crc:
                        _check_chunk(body, offset)
                        counts.chunk_crcs += 1
                    running = None if running is None else zlib.crc32(body, zlib.crc32(head, running))
                else:
                    f.seek(end)
            elif running is not None:
                running = zlib.crc32(f.read(length), zlib.crc32(head, running))
            else:
                f.seek(end)
            offset = end
        if running is not None:
            if running != data_crc:
                raise _Damage("fails its data section CRC check")
            counts.data_crc = True


def _check_chunk(body: bytes, offset: int) -> None:
    _, _, uncompressed_size, crc, name_size = CHUNK_HEAD.unpack_from(body)
    at = CHUNK_HEAD.size + name_size
    if at + 8 > len(body):
        raise _Damage(f"has a damaged chunk at byte {offset}")
    compression = body[CHUNK_HEAD.size:at].decode(errors="replace")
    (compressed_size,) = struct.unpack_from("<Q", body, at)
    if at + 8 + compressed_size != len(body):
        raise _Damage(f"has a damaged chunk at byte {offset} (its sizes do not add up)")
    try:
        decompress(body[at + 8:], compression, uncompressed_size, crc)  # rosbags' own check of the CRC
    except ReaderError as err:
        raise _Damage(f"fails the CRC check of its chunk at byte {offset} ({str(err).rstrip('.')})") from None


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise _Damage(f"is shorter than its records say (byte {offset + len(data)})", unfinished=True)
    return data
