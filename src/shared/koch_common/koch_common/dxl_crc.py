"""CRC-16 of Dynamixel Protocol 2.0 (polynomial 0x8005, MSB first), shared by the driver and the emulator.

dynamixel-sdk's own `updateCRC` rebuilds its 256-entry table on every call (about 30 us for a
6-servo Fast Sync Read reply in CPython), which is a tenth of the bus's per-read software budget.
"""

from __future__ import annotations

from collections.abc import Sequence


def _crc_table() -> list[int]:
    # The table printed in the e-Manual's "CRC calculation" section.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | Sequence[int], crc: int = 0) -> int:
    """CRC-16 (0x8005) of `data`, continuing from `crc` (the CRC of the bytes before it)."""
    table = CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ table[(crc >> 8) ^ byte]
    return crc
