"""The Koch arm's Dynamixel bus on the real `dynamixel_sdk` (ROS-free).

One GroupSyncRead of Present_Current..Present_Position (126..135) per control cycle (Fast
Sync Read when every servo's firmware supports it, with an automatic fall back to plain Sync
Read when fast reads keep failing where plain ones succeed) and one GroupSyncWrite of
Goal_Position per command, with bounded retries and errors that name the port, the servo ID
and the model so a person at the robot knows what to check. A port that vanishes under the
SDK (USB unplugged) raises `PortLostError`, so the driver can hold safe and reconnect.

One owner per port: the port is locked as it opens (`PortBusyError` names the holder), since two
masters on one line each read the other's replies and write their own goals in between. A reply
that does not decode (short, or answering another request) is a failed attempt, retried and
then a `BusError`, like a timeout: nothing but a BusError leaves the bus's cyclic I/O.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import select
import struct
import termios
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import dynamixel_sdk as sdk
import numpy as np
import serial

from koch_common.dxl_crc import crc16
from koch_common.dynamixel_models import (
    EEPROM_END,
    MODELS,
    SIGNED_FIELDS,
    STATUS_ALERT_BIT,
    ModelSpec,
    model_by_name,
    shared_field,
    to_signed,
    to_unsigned,
)

T = TypeVar("T")

# One sync read per cycle: Present_Current, Present_Velocity and Present_Position, one block on every model.
_STATE_FIELDS = (("current", "Present_Current"), ("velocity", "Present_Velocity"), ("position", "Present_Position"))
STATE_ADDRESS = shared_field("Present_Current")[0]
STATE_DTYPE = np.dtype({
    "names": [name for name, _ in _STATE_FIELDS],
    "formats": [f"<i{shared_field(field)[1]}" for _, field in _STATE_FIELDS],  # all three are signed
    "offsets": [shared_field(field)[0] - STATE_ADDRESS for _, field in _STATE_FIELDS],
})
STATE_LENGTH = STATE_DTYPE.itemsize
GOAL_POSITION_ADDRESS, GOAL_POSITION_LENGTH = shared_field("Goal_Position")
HARDWARE_ERROR_ADDRESS, HARDWARE_ERROR_LENGTH = shared_field("Hardware_Error_Status")
# Fast Sync Read failing this many times in a row while plain Sync Read works -> plain only.
FAST_READ_FALLBACK_AFTER = 3
# Baud rates probed when no servo answers, most common first (Koch servos ship at 57600).
PROBE_BAUDRATES = (57600, 1000000, 115200, 2000000, 3000000, 4000000, 9600)
DEFAULT_ATTEMPTS = 3
DEFAULT_TIMEOUT_SLACK_MS = 20.0
SUPPORTED_BAUDRATES = (
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
    1000000, 1152000, 2000000, 2500000, 3000000, 3500000, 4000000,
)  # fmt: skip


class TablePacketHandler(sdk.Protocol2PacketHandler):
    """The SDK's Protocol 2.0 handler with a CRC from a table built once, not on every packet."""

    def __init__(self) -> None:
        super().__init__()
        self._instruction_crcs: dict[tuple[int, ...], int] = {}

    def updateCRC(self, crc_accum: int, data_blk_ptr: list[int], data_blk_size: int) -> int:  # the SDK's name
        if crc_accum != 0 or data_blk_size > 24:
            return crc16(data_blk_ptr[:data_blk_size], crc_accum)
        # Short packets from the start: the bus loop sends the same sync read instruction on every
        # cycle, so its CRC is remembered instead of recomputed (bounded: few distinct instructions).
        key = tuple(data_blk_ptr[:data_blk_size])
        crc = self._instruction_crcs.get(key)
        if crc is None:
            if len(self._instruction_crcs) >= 64:
                self._instruction_crcs.clear()
            crc = self._instruction_crcs[key] = crc16(key)
        return crc


class PatientPortHandler(sdk.PortHandler):
    """The SDK's port with extra slack on every status timeout.

    The SDK waits (bytes x byte time) + 34 ms for a reply. A loaded host (the simulator's
    emulator on a busy 2-core CI machine, or a slow USB hub) can exceed that; the slack costs
    nothing while servos answer and only lengthens the wait for one that does not.
    """

    is_open: bool  # the SDK's attributes, set in its __init__
    ser: serial.Serial  # None until the first open (the SDK never checks)

    def __init__(self, port_name: str, timeout_slack_ms: float) -> None:
        super().__init__(port_name)
        self.timeout_slack_ms = timeout_slack_ms

    def setupPort(self, cflag_baud: int) -> bool:  # the SDK's name; it opens the port (on every baud change too)
        """The SDK's open, with the port locked for this process before anything is changed on it.

        Two locks, because each covers what the other does not: `flock` on the device (taken by pyserial's
        `exclusive` before it configures the line, so a refused opener flushes and re-bauds nothing; seen by
        every process, root included, and released when the holder dies) and TIOCEXCL on the tty (the kernel
        then refuses any other open() with EBUSY, also programs that never flock, except for root).
        The resolved device is opened, so a udev or emulator symlink and the device it names are one port.
        """
        if self.is_open:
            self.closePort()
        device = os.path.realpath(self.port_name)
        try:
            self.ser = serial.Serial(port=device, baudrate=self.baudrate, bytesize=serial.EIGHTBITS, timeout=0,
                                     exclusive=True)
        except serial.SerialException as exc:
            if exc.errno in (errno.EAGAIN, errno.EBUSY):  # flock held / TIOCEXCL set by another opener
                raise PortBusyError(_port_busy_message(self.port_name, device)) from None
            raise
        try:
            fcntl.ioctl(self.ser.fd, termios.TIOCEXCL)
        except OSError:
            self.ser.close()
            raise
        self.is_open = True
        self.tx_time_per_byte = (1000.0 / self.baudrate) * 10.0
        return True

    def closePort(self) -> None:  # the SDK's name
        """Clear TIOCEXCL first: it belongs to the tty, not to this descriptor, and outlives the close while
        another descriptor keeps the tty (the emulator holds its pty's), refusing the next open."""
        if self.ser is not None and self.ser.fd is not None:
            with contextlib.suppress(OSError):  # a hung-up (unplugged) port refuses ioctls
                fcntl.ioctl(self.ser.fd, termios.TIOCNXCL)
        super().closePort()

    def setPacketTimeout(self, packet_length: int) -> None:  # the SDK's name
        super().setPacketTimeout(packet_length)
        self.packet_timeout += self.timeout_slack_ms

    def writePort(self, packet: list[int]) -> int:  # the SDK's name
        """The whole packet in one os.write; pyserial's write() adds a select() after every write."""
        data = bytes(packet)
        written = 0
        while written < len(data):
            try:
                written += os.write(self.ser.fd, data[written:])
            except BlockingIOError:  # the kernel's output buffer is full: wait until it drains
                if not select.select([], [self.ser.fd], [], 1.0)[1]:
                    # Nothing drained for a second: the adapter is stuck; the bus treats it as a lost port.
                    raise serial.SerialTimeoutException(f"write to {self.port_name} stalled for 1 s") from None
        return written

    def readPort(self, length: int) -> bytes:  # the SDK's name
        """What has arrived (up to `length` bytes), waiting in select() for the first byte.

        The SDK polls a non-blocking read until the packet timeout; on a small robot computer
        (and on the emulator's host) that spinning steals the CPU the rest of the stack needs.
        Blocking until a byte arrives or the timeout passes returns the same bytes just as soon.
        The fd is read directly: pyserial's read() adds an ioctl and a select() per call, a
        visible share of the ~0.15 ms a 1 Mbps read cycle leaves to software.
        (Polling only around the reply's expected arrival was measured too: no gain for Fast
        Sync Read, and a third slower plain Sync Read, whose replies trickle in one by one.)
        """
        fd = self.ser.fd
        data = _read_available(fd, length)
        if data or self.packet_timeout <= 0:
            return data
        remaining_ms = self.packet_timeout - self.getTimeSinceStart()
        if remaining_ms <= 0 or not select.select([fd], [], [], remaining_ms / 1000.0)[0]:
            return b""
        data = _read_available(fd, length)
        if not data:  # readable but empty: end of file, as pyserial reports it
            raise serial.SerialException("device reports readiness to read but returned no data (device disconnected?)")
        return data


def port_holders(device: str) -> list[int]:
    """PIDs that hold `device`: the owners of a flock on it (/proc/locks), else the processes with it open.
    Empty where /proc cannot tell (another PID namespace, no permission)."""
    try:
        st = os.stat(device)
        with open("/proc/locks", encoding="ascii") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return []
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    holders = []
    for fields in (line.split() for line in lines):  # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:3 0 EOF"
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[4].isdigit():
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                holders.append(int(fields[4]))
    if holders:
        return sorted(set(holders))
    opened = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == device for fd in fd_dir.iterdir()):
                opened.append(int(fd_dir.parent.name))
    return sorted(opened)


def _port_busy_message(port: str, device: str) -> str:
    holders = port_holders(device)
    names = []
    for pid in holders:
        try:
            names.append(f"PID {pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})")
        except OSError:
            names.append(f"PID {pid}")
    via = f" ({device})" if device != port else ""
    who = f"is in use by {', '.join(names)}" if names else "is in use by another process (its PID is not visible)"
    return (f"serial port {port}{via} {who}: two programs on one bus fight over the arm; stop that one "
            "(another driver, calibrate, Dynamixel Wizard) first")


def _read_available(fd: int, length: int) -> bytes:
    try:
        return os.read(fd, length)
    except BlockingIOError:
        return b""


class BusError(RuntimeError):
    """The Dynamixel bus failed; the message names the port, the servo and what to check."""


class PortLostError(BusError):
    """The serial port itself failed (adapter unplugged, pty hung up): reopen it to go on."""


class PortBusyError(BusError):
    """Another process holds the serial port: waiting would not free it, so it is not retried."""


class MalformedReplyError(BusError):
    """A reply passed the SDK's checks but did not decode: short, or the answer to another request (a second
    master on the line). A failed attempt like a timeout, retried."""


# What decoding a reply raises on a malformed one (dynamixel-sdk indexes replies without checking lengths).
_DECODE_ERRORS = (ValueError, IndexError, KeyError, struct.error)


class DynamixelBus:
    """Protocol 2.0 bus of servos `ids` on `port`; arrays are always in `ids` order."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        ids: list[int],
        expected_models: dict[int, str] | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout_slack_ms: float = DEFAULT_TIMEOUT_SLACK_MS,
        fast_sync_read: bool = True,
    ) -> None:
        if not ids:
            raise ValueError("DynamixelBus needs at least one servo ID")
        if len(set(ids)) != len(ids):
            raise ValueError(f"servo IDs must be unique, got {ids}")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.port_name = port
        self.baudrate = baudrate
        self.ids = list(ids)
        self.attempts = attempts
        self.timeout_slack_ms = timeout_slack_ms
        self._expected: dict[int, ModelSpec] = {
            servo_id: model_by_name(name) for servo_id, name in (expected_models or {}).items()
        }
        unknown_ids = sorted(set(self._expected) - set(self.ids))
        if unknown_ids:
            raise ValueError(f"expected_models names IDs {unknown_ids} that are not on the bus {self.ids}")
        self._models: dict[int, ModelSpec] = dict(self._expected)
        self._port: sdk.PortHandler | None = None
        self._packets = TablePacketHandler()
        self._state_reader: sdk.GroupSyncRead | None = None
        self._error_reader: sdk.GroupSyncRead | None = None
        self._firmware: dict[int, int] = {}
        self.fast_sync_read_wanted = fast_sync_read
        self._fast_failures = 0
        self.fast_fallbacks = 0  # times fast reads failed and a plain read was used instead
        self.alert_seen = False
        self._baud_probed = False
        self.retries = 0  # extra attempts spent on reads/writes that eventually succeeded or not

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        if self.baudrate not in SUPPORTED_BAUDRATES:
            raise BusError(
                f"baud rate {self.baudrate} cannot be set on {self.port_name}: dynamixel_sdk supports "
                f"{list(SUPPORTED_BAUDRATES)}; the Koch servos ship at 57600 and are usually set to 1000000"
            )
        if not os.path.exists(self.port_name):
            hint = ""
            if os.path.islink(self.port_name):
                hint = f" (it is a dangling symlink to {os.readlink(self.port_name)})"
            raise BusError(
                f"serial port {self.port_name} does not exist{hint}: check the USB cable and the udev rule "
                "for the arm, or start the simulator's servo emulator"
            )
        port = PatientPortHandler(self.port_name, self.timeout_slack_ms)
        try:
            ok = port.setBaudRate(self.baudrate)  # opens the port at that rate
        except serial.SerialException as exc:
            raise BusError(self._open_error(exc)) from exc
        except (OSError, ValueError) as exc:
            raise BusError(f"cannot set baud rate {self.baudrate} on {self.port_name}: {exc}") from exc
        if not ok:
            raise BusError(f"cannot set baud rate {self.baudrate} on {self.port_name}")
        self._port = port
        self._state_reader = self._group_reader(STATE_ADDRESS, STATE_LENGTH)
        self._error_reader = self._group_reader(HARDWARE_ERROR_ADDRESS, HARDWARE_ERROR_LENGTH)
        self._fast_failures = 0

    def _group_reader(self, address: int, length: int) -> sdk.GroupSyncRead:
        reader = sdk.GroupSyncRead(self._port, self._packets, address, length)
        for servo_id in self.ids:
            reader.addParam(servo_id)
        return reader

    def _open_error(self, exc: serial.SerialException) -> str:
        code = getattr(exc, "errno", None)
        if code == errno.EACCES or "Permission denied" in str(exc):
            return (
                f"permission denied opening {self.port_name}: add your user to the 'dialout' group "
                "(sudo usermod -aG dialout $USER, then log in again) or fix the udev rule's MODE"
            )
        if code == errno.ENOENT:
            return f"serial port {self.port_name} does not exist: check the USB cable and udev rule"
        if code == errno.ENOTTY or "Inappropriate ioctl" in str(exc):
            return f"{self.port_name} is not a serial device: point the arm's port at the U2D2 adapter"
        if code == errno.EBUSY:
            return f"serial port {self.port_name} is busy: another process (a driver node?) holds it"
        return f"cannot open serial port {self.port_name} at {self.baudrate} baud: {exc}"

    def close(self) -> None:
        if self._port is not None and self._port.is_open:
            with contextlib.suppress(OSError, serial.SerialException, termios.error):
                self._port.closePort()
        self._port = None
        self._state_reader = None
        self._error_reader = None

    def _io(self, call: Callable[[], T]) -> T:
        """Run one SDK call; a failing serial port becomes PortLostError (naming the port), a reply the SDK
        cannot decode MalformedReplyError."""
        try:
            return call()
        except (serial.SerialException, OSError, termios.error) as exc:
            raise PortLostError(
                f"serial port {self.port_name} failed ({exc}): the USB adapter was unplugged or reset; "
                "check the cable, the driver reconnects when the port returns"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise self._malformed(exc) from exc

    def _malformed(self, exc: Exception) -> MalformedReplyError:
        return MalformedReplyError(
            f"malformed reply on {self.port_name} ({type(exc).__name__}: {exc}): line noise, or another master "
            "on the bus (a second driver on this port?)"
        )

    def __enter__(self) -> DynamixelBus:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def _require_port(self) -> sdk.PortHandler:
        if self._port is None:
            raise BusError(f"the bus on {self.port_name} is not open; call open() first")
        return self._port

    # -- discovery ------------------------------------------------------------------------
    def ping_all(self) -> dict[int, int]:
        """Ping every servo; returns id -> model number, checked against `expected_models`."""
        found: dict[int, int] = {}
        for servo_id in self.ids:
            expected = self._expected.get(servo_id)
            wanted = f" (expected {expected.name})" if expected else ""
            try:
                model_number = self._with_retry(
                    functools.partial(self._ping_once, servo_id),
                    f"servo ID {servo_id}{wanted} does not answer a ping on {self.port_name} at "
                    f"{self.baudrate} baud: check its power and cable, its ID and baud rate (Dynamixel Wizard)",
                )
            except PortLostError:
                raise
            except BusError as exc:
                if not found:
                    self._raise_if_other_baud(servo_id, wanted, exc)
                raise
            spec = MODELS.get(model_number)
            if spec is None:
                raise BusError(
                    f"servo ID {servo_id} on {self.port_name} reports unknown model number {model_number}"
                    f"{wanted}; supported: {sorted((s.name, n) for n, s in MODELS.items())}"
                )
            if expected is not None and spec.model_number != expected.model_number:
                raise BusError(
                    f"servo ID {servo_id} on {self.port_name} is a {spec.name} (model number "
                    f"{model_number}) but config/koch.yaml expects {expected.name} (model number "
                    f"{expected.model_number}): fix the ID assignment or the model in the config"
                )
            self._models[servo_id] = spec
            self._firmware[servo_id] = self.read_field(servo_id, "Firmware_Version")
            found[servo_id] = model_number
        return found

    def _raise_if_other_baud(self, servo_id: int, wanted: str, original: BusError) -> None:
        """No servo answers at all: ping this one at the other common rates, to name the right one.

        One unicast ping per rate (tens of ms each, unlike a broadcast ping's ~1 s), and only
        once per bus object, so a driver retrying a powered-off arm does not pay it every time.
        """
        if self._baud_probed:
            return
        self._baud_probed = True
        port = self._require_port()
        try:
            for baudrate in PROBE_BAUDRATES:
                if baudrate == self.baudrate or not self._io(functools.partial(port.setBaudRate, baudrate)):
                    continue
                model_number, result, _ = self._ping_once(servo_id)
                if result == sdk.COMM_SUCCESS:
                    raise BusError(
                        f"servo ID {servo_id}{wanted} does not answer on {self.port_name} at {self.baudrate} baud "
                        f"but answers at {baudrate} baud (model number {model_number}): wrong baud rate; set the "
                        f"arm's baudrate to {baudrate} in config/koch.yaml or change the servos' Baud_Rate with "
                        "Dynamixel Wizard"
                    ) from original
        finally:
            self._io(lambda: port.setBaudRate(self.baudrate))

    def _ping_once(self, servo_id: int) -> tuple[int, int, int]:
        port = self._require_port()
        return self._io(lambda: self._packets.ping(port, servo_id))

    @property
    def uses_fast_sync_read(self) -> bool:
        """Fast Sync Read is on: asked for, every servo's firmware has it, and it has not kept failing."""
        if not self.fast_sync_read_wanted or self._fast_failures >= FAST_READ_FALLBACK_AFTER:
            return False
        for servo_id in self.ids:
            spec, firmware = self._models.get(servo_id), self._firmware.get(servo_id)
            if spec is None or firmware is None or spec.fast_sync_read_min_firmware is None:
                return False
            if firmware < spec.fast_sync_read_min_firmware:
                return False
        return True

    def model_of(self, servo_id: int) -> ModelSpec | None:
        return self._models.get(servo_id)

    # -- cyclic I/O -------------------------------------------------------------------------
    def read_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position_raw, velocity_raw, current_raw) as int64 arrays in `ids` order."""
        reader = self._state_reader
        self._require_port()
        assert reader is not None
        self._sync_read(reader, STATE_ADDRESS, STATE_LENGTH, "the servo state")
        try:
            return self._decode_state(reader)
        except _DECODE_ERRORS as exc:  # _sync_read checked every reply's length: a last line of defence
            raise self._malformed(exc) from exc

    def read_hardware_errors(self) -> dict[int, int]:
        """Hardware_Error_Status of every servo (one sync read): id -> bits (0 = healthy)."""
        reader = self._error_reader
        self._require_port()
        assert reader is not None
        self._sync_read(reader, HARDWARE_ERROR_ADDRESS, HARDWARE_ERROR_LENGTH, "Hardware_Error_Status")
        try:
            return {servo_id: int(reader.getData(servo_id, HARDWARE_ERROR_ADDRESS, HARDWARE_ERROR_LENGTH))
                    for servo_id in self.ids}
        except _DECODE_ERRORS as exc:
            raise self._malformed(exc) from exc

    def _sync_read(self, reader: sdk.GroupSyncRead, address: int, length: int, what: str) -> None:
        """Up to `attempts` sync reads; fast ones first while they work, plain ones as fall back.

        A reply only counts with `length` bytes from every servo: the SDK's isAvailable checks the address
        range, not what arrived, and a short reply (another request's answer) would reach the decoding."""
        detail = ""
        for attempt in range(self.attempts):
            fast = self.uses_fast_sync_read and attempt == 0
            try:
                result = self._io(partial(_fast_sync_read, reader) if fast else reader.txRxPacket)
            except MalformedReplyError as err:
                result, detail = sdk.COMM_RX_CORRUPT, str(err)
            else:
                short = [sid for sid in self.ids if len(reader.data_dict.get(sid) or []) < length]
                if result == sdk.COMM_SUCCESS and short:
                    result, detail = sdk.COMM_RX_CORRUPT, (
                        f"malformed reply: {len(reader.data_dict.get(short[0]) or [])} of {length} bytes from ID "
                        f"{short[0]}; line noise, or another master on the bus (a second driver on this port?)")
                elif result != sdk.COMM_SUCCESS:
                    detail = self._packets.getTxRxResult(result)
            ok = result == sdk.COMM_SUCCESS and all(reader.isAvailable(sid, address, length) for sid in self.ids)
            if attempt > 0:
                self.retries += 1
            if ok:
                if fast:
                    self._fast_failures = 0
                elif attempt > 0 and self.uses_fast_sync_read:
                    self._fast_failures += 1  # plain worked where fast did not
                    self.fast_fallbacks += 1
                return
        silent = [sid for sid in self.ids if len(reader.data_dict.get(sid) or []) < length]
        detail = detail or self._packets.getTxRxResult(result)
        raise BusError(
            f"sync read of {what} on {self.port_name} failed {self.attempts} times ({detail}); first servo "
            f"without data: ID {silent[0] if silent else '?'} ({self._model_label(silent[0]) if silent else 'unknown'})"
        )

    def _decode_state(self, reader: sdk.GroupSyncRead) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # One vectorised decode of the little-endian block instead of 18 getData calls: at 1 Mbps
        # the SDK's per-field Python decoding is a visible share of a 1.1 ms read cycle.
        raw = b"".join(bytes(reader.data_dict[servo_id][:STATE_LENGTH]) for servo_id in self.ids)
        state = np.frombuffer(raw, dtype=STATE_DTYPE)
        return (state["position"].astype(np.int64), state["velocity"].astype(np.int64),
                state["current"].astype(np.int64))

    def write_goal_positions(self, raw: np.ndarray | list[int]) -> None:
        """One GroupSyncWrite of Goal_Position (no status reply, so no retry is possible)."""
        port = self._require_port()
        values = np.asarray(raw)
        if values.shape != (len(self.ids),):
            raise ValueError(
                f"expected {len(self.ids)} goal positions (one per ID {self.ids}), got shape {values.shape}"
            )
        writer = sdk.GroupSyncWrite(port, self._packets, GOAL_POSITION_ADDRESS, GOAL_POSITION_LENGTH)
        for servo_id, value in zip(self.ids, values, strict=True):
            encoded = to_unsigned(int(value), GOAL_POSITION_LENGTH)
            data = list(encoded.to_bytes(GOAL_POSITION_LENGTH, "little"))
            writer.addParam(servo_id, data)
        result = self._io(writer.txPacket)
        if result != sdk.COMM_SUCCESS:
            reason = self._packets.getTxRxResult(result)
            raise BusError(f"sync write of goal positions on {self.port_name} failed: {reason}")

    def set_torque(self, enabled: bool, ids: list[int] | None = None) -> None:
        for servo_id in self.ids if ids is None else ids:
            self.write_field(servo_id, "Torque_Enable", int(enabled))

    def reboot(self, servo_id: int) -> None:
        """REBOOT instruction: clears Hardware_Error_Status; the servo comes back with torque off."""
        port = self._require_port()
        self._with_retry(
            lambda: (0, *self._io(lambda: self._packets.reboot(port, servo_id))),
            f"rebooting servo ID {servo_id} ({self._model_label(servo_id)}) on {self.port_name} failed",
        )

    # -- single fields ----------------------------------------------------------------------
    def write_field(self, servo_id: int, name: str, value: int) -> None:
        address, size = self._model(servo_id).address(name)
        data = to_unsigned(int(value), size)
        port = self._require_port()
        writers = {
            1: self._packets.write1ByteTxRx,
            2: self._packets.write2ByteTxRx,
            4: self._packets.write4ByteTxRx,
        }
        hint = " (EEPROM fields are locked while Torque_Enable is 1: set_torque(False) first)"
        self._with_retry(
            lambda: (0, *self._io(lambda: writers[size](port, servo_id, address, data))),
            f"writing {name}={value} to servo ID {servo_id} ({self._model_label(servo_id)}) on "
            f"{self.port_name} failed{hint if address < EEPROM_END else ''}",
        )

    def read_field(self, servo_id: int, name: str) -> int:
        address, size = self._model(servo_id).address(name)
        port = self._require_port()
        readers = {
            1: self._packets.read1ByteTxRx,
            2: self._packets.read2ByteTxRx,
            4: self._packets.read4ByteTxRx,
        }
        value = self._with_retry(
            lambda: self._io(lambda: readers[size](port, servo_id, address)),
            f"reading {name} from servo ID {servo_id} ({self._model_label(servo_id)}) on "
            f"{self.port_name} failed",
        )
        return to_signed(value, size) if name in SIGNED_FIELDS else value

    def _model(self, servo_id: int) -> ModelSpec:
        if servo_id not in self.ids:
            raise BusError(f"servo ID {servo_id} is not on the bus {self.port_name} (IDs {self.ids})")
        if servo_id not in self._models:
            self.ping_all()
        return self._models[servo_id]

    def _model_label(self, servo_id: int) -> str:
        spec = self._models.get(servo_id)
        return spec.name if spec else "model not yet known"

    def _with_retry(self, call: Callable[[], tuple[int, int, int]], what: str) -> int:
        """Run `call() -> (value, comm_result, servo_error)` up to `attempts` times."""
        result, error = sdk.COMM_SUCCESS, 0
        for attempt in range(self.attempts):
            try:
                value, result, error = call()
            except MalformedReplyError:
                value, result, error = 0, sdk.COMM_RX_CORRUPT, 0
            # The alert bit (0x80) only says "read Hardware_Error_Status": the instruction worked.
            if result == sdk.COMM_SUCCESS and error & ~STATUS_ALERT_BIT == 0:
                if error & STATUS_ALERT_BIT:
                    self.alert_seen = True  # the driver polls Hardware_Error_Status next cycle
                return int(value)
            if result == sdk.COMM_SUCCESS:
                break  # the servo answered with an error: repeating the request will not help
            self.retries += 1
            time.sleep(0.002 * (attempt + 1))
        detail = (
            self._packets.getTxRxResult(result)
            if result != sdk.COMM_SUCCESS
            else f"servo error 0x{error:02x}: {self._packets.getRxPacketError(error)}"
        )
        raise BusError(f"{what} ({detail})")


def _fast_sync_read(reader: sdk.GroupSyncRead) -> int:
    """GroupSyncRead.fastSyncRead, with a short or foreign reply reported as corrupt.

    dynamixel-sdk 4.1 indexes into the reply without checking its length: a status packet whose
    ID is not the broadcast ID (a late reply to an earlier instruction) leaves it empty, and the
    SDK raises IndexError instead of returning an error code.
    """
    try:
        return reader.fastSyncRead()
    except _DECODE_ERRORS:
        return sdk.COMM_RX_CORRUPT
