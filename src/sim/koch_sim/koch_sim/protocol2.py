"""Dynamixel Protocol 2.0 framing for the servo side: CRC-16, byte stuffing, packet parsing.

Packet: FF FF FD 00 | ID | LEN_L LEN_H | INST | params... | CRC_L CRC_H, where LEN counts
INST + params + CRC after stuffing, and the CRC covers every byte before it (stuffed).
"""

from __future__ import annotations

from dataclasses import dataclass

from koch_common.dxl_crc import crc16

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_PACKET_LENGTH = 1024  # LEN values above this are line noise, not packets

INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REBOOT = 0x08
INST_STATUS = 0x55
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83
INST_FAST_SYNC_READ = 0x8A

# Status packet error numbers (bit 7 is the hardware alert flag).
ERR_NONE = 0x00
ERR_RESULT_FAIL = 0x01
ERR_INSTRUCTION = 0x02
ERR_CRC = 0x03
ERR_DATA_RANGE = 0x04
ERR_DATA_LENGTH = 0x05
ERR_DATA_LIMIT = 0x06
ERR_ACCESS = 0x07


def stuff(payload: bytes | bytearray) -> bytes:
    """FF FF FD -> FF FF FD FD inside instruction + params, so no header appears mid-packet."""
    out = bytearray()
    for byte in payload:
        out.append(byte)
        if byte == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(payload: bytes | bytearray) -> bytes:
    """Inverse of `stuff`: drop the FD that follows every FF FF FD."""
    out = bytearray()
    i = 0
    while i < len(payload):
        byte = payload[i]
        out.append(byte)
        after_header = byte == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF
        if after_header and i + 1 < len(payload) and payload[i + 1] == 0xFD:
            i += 1
        i += 1
    return bytes(out)


def build_packet(servo_id: int, instruction: int, params: bytes | bytearray = b"") -> bytes:
    body = stuff(bytes([instruction]) + bytes(params))
    length = len(body) + 2
    packet = HEADER + bytes([servo_id, length & 0xFF, length >> 8]) + body
    crc = crc16(packet)
    return packet + bytes([crc & 0xFF, crc >> 8])


def build_status(servo_id: int, error: int, params: bytes | bytearray = b"") -> bytes:
    return build_packet(servo_id, INST_STATUS, bytes([error]) + bytes(params))


@dataclass(frozen=True)
class Packet:
    servo_id: int
    instruction: int
    params: bytes  # unstuffed


class PacketParser:
    """Incremental parser: feed raw bytes, get whole packets with a valid CRC.

    A packet with a bad CRC is dropped silently, as a real servo does; the parser then
    resynchronises on the next header (stuffing guarantees none occurs inside a packet).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.crc_errors = 0

    def clear(self) -> None:
        self._buffer.clear()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer.extend(data)
        packets: list[Packet] = []
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                # Keep a possible partial header at the end.
                keep = min(len(self._buffer), len(HEADER) - 1)
                del self._buffer[: len(self._buffer) - keep]
                return packets
            del self._buffer[:start]
            if len(self._buffer) < 7:
                return packets
            length = self._buffer[5] | (self._buffer[6] << 8)
            if length < 3 or length > MAX_PACKET_LENGTH:
                del self._buffer[:1]
                continue
            total = 7 + length
            if len(self._buffer) < total:
                return packets
            frame = bytes(self._buffer[:total])
            if crc16(frame[:-2]) != (frame[-2] | (frame[-1] << 8)):
                self.crc_errors += 1
                del self._buffer[:1]
                continue
            del self._buffer[:total]
            payload = unstuff(frame[7:-2])
            packets.append(Packet(servo_id=frame[4], instruction=payload[0], params=payload[1:]))
