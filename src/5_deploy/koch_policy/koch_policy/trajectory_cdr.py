"""A safe chunk as a serialized trajectory_msgs/JointTrajectory (CDR, little endian), ROS-free.

rclpy converts a message object to C field by field (~60 us for ten points warm, 0.3-0.5 ms with
the caches cold after an inference): more than the rest of the node's path from a chunk's arrival
to its publication. The node publishes these bytes instead (`Publisher.publish` takes serialized
messages); the tests require rclpy to deserialize them to the JointTrajectory message of the same
chunk, and the node's DDS tests receive them with ordinary JointTrajectory subscriptions.

For given joint names and point times every field but the stamp, positions and velocities is
fixed, and so is where those sit: `_template` writes the message once with `CdrWriter` and
records where the numbers go; a publication copies it and fills them in (two numpy assignments).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from koch_common.safety import SafeChunk

CDR_LE = b"\x00\x01\x00\x00"  # encapsulation: plain CDR, little endian
_U32 = struct.Struct("<I")
_TIME = struct.Struct("<iI")
_STAMP_OFFSET = len(CDR_LE)  # header.stamp is the message's first field


class CdrWriter:
    """Plain CDR: primitives aligned to their size, counted from the end of the encapsulation header."""

    def __init__(self) -> None:
        self.buffer = bytearray(CDR_LE)

    def align(self, size: int) -> None:
        self.buffer += bytes(-(len(self.buffer) - len(CDR_LE)) % size)

    def u32(self, value: int) -> None:
        self.align(4)
        self.buffer += _U32.pack(value)

    def time(self, sec: int, nanosec: int) -> None:  # builtin_interfaces Time and Duration
        self.align(4)
        self.buffer += _TIME.pack(sec, nanosec)

    def string(self, text: str) -> None:
        data = text.encode() + b"\0"
        self.u32(len(data))
        self.buffer += data

    def float64_zeros(self, count: int) -> int:
        """A float64 sequence of `count` zeros; returns where its values start."""
        self.u32(count)
        self.align(8)
        start = len(self.buffer)
        self.buffer += bytes(8 * count)
        return start


# CDR aligns float64s to 8 bytes counted after the 4-byte encapsulation header: behind 4 more bytes
# of padding, every float64 of the message sits at a multiple of 8 of the buffer, one float64 view.
_PAD = 4


@dataclass(frozen=True)
class _Template:
    padded: np.ndarray  # uint8: _PAD bytes, then the message with stamp, positions and velocities zero
    size: int  # of the message
    positions: np.ndarray  # (points, joints) indices of the positions in the buffer's float64 view
    velocities: np.ndarray


@functools.lru_cache(maxsize=32)
def _template(joint_names: tuple[str, ...], times_ns: tuple[int, ...]) -> _Template:
    """Header (zero stamp, empty frame_id), joint names, one point per time: positions, velocities, no
    accelerations or efforts, time_from_start."""
    out = CdrWriter()
    out.time(0, 0)
    out.string("")
    out.u32(len(joint_names))
    for name in joint_names:
        out.string(name)
    out.u32(len(times_ns))
    positions, velocities = [], []
    for t in times_ns:
        positions.append(out.float64_zeros(len(joint_names)))
        velocities.append(out.float64_zeros(len(joint_names)))
        out.u32(0)  # accelerations
        out.u32(0)  # effort
        out.time(*divmod(t, 1_000_000_000))
    size = len(out.buffer)
    padded = np.zeros(-(-(_PAD + size) // 8) * 8, np.uint8)
    padded[_PAD:_PAD + size] = np.frombuffer(out.buffer, np.uint8)

    def indices(starts: list[int]) -> np.ndarray:
        return (np.asarray(starts, np.intp)[:, None] + _PAD) // 8 + np.arange(len(joint_names))

    return _Template(padded, size, indices(positions), indices(velocities))


def joint_trajectory_cdr(stamp: tuple[int, int], joint_names: Sequence[str], positions: np.ndarray,
                         velocities: np.ndarray, times_ns: Sequence[int]) -> bytes:
    """The JointTrajectory with header.stamp = stamp (sec, nanosec), empty frame_id, the joint names and
    point k = (positions[k], velocities[k], no accelerations or efforts, time_from_start times_ns[k])."""
    template = _template(tuple(joint_names), tuple(times_ns))
    if positions.shape != template.positions.shape or velocities.shape != positions.shape:
        raise ValueError(f"positions and velocities must be {template.positions.shape} (points, joints), got "
                         f"{positions.shape} and {velocities.shape}")
    buffer = template.padded.copy()
    # numpy arrays export the buffer protocol; numpy's type stubs do not declare it
    _TIME.pack_into(buffer, _PAD + _STAMP_OFFSET, *stamp)  # type: ignore[arg-type]
    numbers = buffer.view("<f8")
    numbers[template.positions] = positions
    numbers[template.velocities] = velocities
    return buffer[_PAD:_PAD + template.size].tobytes()


@functools.lru_cache(maxsize=64)
def point_times_ns(count: int, fps: float) -> tuple[int, ...]:
    """time_from_start of each point: k / fps. A one-point hold is due one tick after the stamp, so no
    message ends in the past (ros2_control's trajectory controller rejects those)."""
    dt_ns = 1e9 / fps
    if count == 1:
        return (int(round(dt_ns)),)
    return tuple(int(round(k * dt_ns)) for k in range(count))


def safe_chunk_cdr(command: SafeChunk, joint_names: Sequence[str], stamp: tuple[int, int], fps: float) -> bytes:
    """The serialized JointTrajectory the node publishes for `command` (stamp: sec, nanosec)."""
    if not isinstance(command, SafeChunk):
        raise TypeError("only SafeChunk commands (built by the safety layer) may be published")
    positions = command.positions
    return joint_trajectory_cdr(stamp, joint_names, positions, command.velocities(),
                                point_times_ns(len(positions), fps))
