"""A safe chunk as a serialized trajectory_msgs/JointTrajectory (CDR, little endian), ROS-free.

rclpy converts a message object to C field by field (~60 us for ten points warm, 0.3-0.5 ms with
the caches cold after an inference): more than the rest of the node's path from a chunk's arrival
to its publication. The node publishes these bytes instead (`Publisher.publish` takes serialized
messages); the tests require rclpy to deserialize them to the JointTrajectory message of the same
chunk, and the node's DDS tests receive them with ordinary JointTrajectory subscriptions.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from koch_common.safety import SafeChunk

CDR_LE = b"\x00\x01\x00\x00"  # encapsulation: plain CDR, little endian
_U32 = struct.Struct("<I")
_TIME = struct.Struct("<iI")
_POINT_END = struct.Struct("<IIiI")  # no accelerations, no efforts, time_from_start


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


@functools.lru_cache(maxsize=8)
def _layout(joint_names: tuple[str, ...]) -> tuple[bytes, bool]:
    """The bytes between the stamp and the point count (empty frame_id, the joint names), and whether
    the first point starts 8-aligned (after the names every point does: each is 32 + 16 J bytes)."""
    out = CdrWriter()
    out.time(0, 0)
    out.string("")
    out.u32(len(joint_names))
    for name in joint_names:
        out.string(name)
    out.align(4)
    return bytes(out.buffer[len(CDR_LE) + _TIME.size:]), (len(out.buffer) - len(CDR_LE) + 4) % 8 == 0


def joint_trajectory_cdr(stamp: tuple[int, int], joint_names: list[str], positions: np.ndarray,
                         velocities: np.ndarray, times_ns: list[int]) -> bytes:
    """Header (stamp, empty frame_id), joint names, and one point per row: positions, velocities, no
    accelerations or efforts, time_from_start = times_ns[k]. The points are assembled from fixed
    pieces (CdrWriter's layout, worked out once): ten method calls a point cost more than the rest."""
    after_stamp, aligned = _layout(tuple(joint_names))
    joints = len(joint_names)
    if positions.shape[1:] != (joints,) or velocities.shape != positions.shape:
        raise ValueError(f"positions and velocities must be (points, {joints}), got {positions.shape}, "
                         f"{velocities.shape}")
    count = _U32.pack(joints)
    padded = count + bytes(4)  # a float64 sequence starting 8-aligned: its count, then 4 bytes to align
    rows = 8 * joints
    p = np.ascontiguousarray(positions, "<f8").tobytes()
    v = np.ascontiguousarray(velocities, "<f8").tobytes()
    parts = [CDR_LE, _TIME.pack(*stamp), after_stamp, _U32.pack(len(positions))]
    for k, t in enumerate(times_ns):
        # the first point may start 4 bytes past an 8-byte boundary: its positions need no padding
        parts += (padded if aligned or k else count, p[k * rows:(k + 1) * rows], padded, v[k * rows:(k + 1) * rows],
                  _POINT_END.pack(0, 0, *divmod(t, 1_000_000_000)))
    return b"".join(parts)


def point_times_ns(count: int, fps: float) -> list[int]:
    """time_from_start of each point: k / fps. A one-point hold is due one tick after the stamp, so no
    message ends in the past (ros2_control's trajectory controller rejects those)."""
    dt_ns = 1e9 / fps
    if count == 1:
        return [int(round(dt_ns))]
    return [int(round(k * dt_ns)) for k in range(count)]


def safe_chunk_cdr(command: SafeChunk, joint_names: list[str], stamp: tuple[int, int], fps: float) -> bytes:
    """The serialized JointTrajectory the node publishes for `command` (stamp: sec, nanosec)."""
    if not isinstance(command, SafeChunk):
        raise TypeError("only SafeChunk commands (built by the safety layer) may be published")
    positions = command.positions
    return joint_trajectory_cdr(stamp, joint_names, positions, command.velocities(),
                                point_times_ns(len(positions), fps))
