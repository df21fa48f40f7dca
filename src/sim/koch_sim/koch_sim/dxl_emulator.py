"""Dynamixel Protocol 2.0 servos emulated behind a pseudo-terminal (ROS-free).

The driver opens the pty's slave side with the real dynamixel_sdk exactly as it opens a
U2D2 adapter, so the sim exercises the same bus code as the robot. Each servo has a byte
control table laid out from `koch_common.dynamixel_models`. Where the servo state comes from
is pluggable: by default, with torque on, Present_Position follows Goal_Position as a
first-order lag, integrated lazily from the monotonic clock before every instruction (no busy
loop); with a `ServoPlant` (the simulated follower: koch_sim.physics.ServoBridge over MuJoCo)
the servo passes torque, goal and current cap to the plant and reads its present position,
velocity and current back, and everything on the wire stays the same. With torque off a position only changes through
`set_present_position`, which is how the simulated leader arm is "moved by hand"; a servo in
current-based position mode (the leader's spring-loaded gripper trigger) can be pushed off
its goal the same way and springs back when released.

Fidelity beyond framing: the status error byte carries the alert bit (0x80) while
Hardware_Error_Status is non-zero; Fast Sync Read (0x8A) is answered with one concatenated
status packet; a line baud rate that differs from the servos' Baud_Rate field gets no reply
(as garbage on a real line would); with `wire_timing=True` every reply is released only
after the instruction's and the reply's bytes would have crossed the wire at the servos' baud
rate plus each servo's Return_Delay_Time. Faults are injected through `FaultInjector`
(`emulator.faults`): dropped replies, corrupted CRCs, hardware error bits, and `unplug()` /
`replug()` of the whole adapter.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import errno
import fcntl
import logging
import math
import os
import select
import signal
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Protocol

from koch_common.dynamixel_models import (
    CONTROL_TABLE_SIZE,
    EEPROM_END,
    POSITION_TICKS_PER_TURN,
    READ_ONLY_FIELDS,
    SIGNED_FIELDS,
    STATUS_ALERT_BIT,
    VELOCITY_UNIT_RPM,
    ModelSpec,
    model_by_name,
    model_by_number,
    to_signed,
    to_unsigned,
)
from koch_sim import protocol2 as p2

_LOG = logging.getLogger(__name__)

FIRMWARE_VERSION = 52
BAUD_RATE_1MBPS = 3
RETURN_DELAY_DEFAULT = 250
POSITION_MODE = 3
EXTENDED_POSITION_MODE = 4
CURRENT_BASED_POSITION_MODE = 5
POSITION_FOLLOWING_MODES = (POSITION_MODE, EXTENDED_POSITION_MODE, CURRENT_BASED_POSITION_MODE)
VALID_OPERATING_MODES = (0, 1, POSITION_MODE, EXTENDED_POSITION_MODE, CURRENT_BASED_POSITION_MODE, 16)
# Present_Current per tick of position error: a stiff P controller, saturating at the limit.
CURRENT_PER_TICK_ERROR = 2.0
# A hand-moved (torque-off) joint reports zero velocity once it has not moved for this long.
MANUAL_VELOCITY_HOLD_S = 0.1
# A half-received packet older than this is line noise; real servos time out similarly.
PARTIAL_PACKET_TIMEOUT_S = 0.1
# Baud_Rate field value -> bits per second (X-series e-Manual).
BAUD_RATES = {0: 9600, 1: 57600, 2: 115200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000, 6: 4_000_000, 7: 4_500_000}
BITS_PER_BYTE = 10  # start + 8 data + stop
RETURN_DELAY_UNIT_S = 2e-6
# Hardware_Error_Status bits (e-Manual): any of them sets the alert bit of every status packet.
HW_INPUT_VOLTAGE = 0x01
HW_OVERHEATING = 0x04
HW_MOTOR_ENCODER = 0x08
HW_ELECTRICAL_SHOCK = 0x10
HW_OVERLOAD = 0x20
# Shutdown (address 63) default on X-series: overheating, electrical shock and overload turn the torque off.
DEFAULT_SHUTDOWN_MASK = HW_OVERHEATING | HW_ELECTRICAL_SHOCK | HW_OVERLOAD
_TCGETS2 = 0x802C542A  # linux/asm-generic ioctl: termios2 carries the line's actual baud rate


class ServoPlant(Protocol):
    """Where a servo's motion comes from when it is not the built-in first-order lag."""

    def drive(self, servo_id: int, torque_on: bool, goal_raw: int, current_cap_ma: int | None) -> None: ...

    def present(self, servo_id: int) -> tuple[float, float, int]:
        """Present position (ticks), velocity (ticks/s) and Present_Current (raw)."""
        ...


class EmulatedServo:
    """One servo: control table bytes plus its position dynamics (first-order lag or a plant)."""

    def __init__(self, servo_id: int, spec: ModelSpec, time_constant_s: float, initial_position: int,
                 plant: ServoPlant | None = None) -> None:
        self.spec = spec
        self.plant = plant
        self.time_constant_s = time_constant_s
        self.table = bytearray(CONTROL_TABLE_SIZE)
        self._position = float(initial_position)
        self._velocity_ticks_per_s = 0.0
        self._last_update = time.monotonic()
        self._manual_time = -math.inf
        # (monotonic time, Goal_Position) of every goal write this servo applied, while recording
        self.goal_writes: list[tuple[float, int]] | None = None
        self._reset_table(servo_id)

    def _reset_table(self, servo_id: int) -> None:
        defaults = {
            "Model_Number": self.spec.model_number,
            "Firmware_Version": FIRMWARE_VERSION,
            "ID": servo_id,
            "Baud_Rate": BAUD_RATE_1MBPS,
            "Return_Delay_Time": RETURN_DELAY_DEFAULT,
            "Operating_Mode": POSITION_MODE,
            "Moving_Threshold": 10,
            "Velocity_Limit": 445,
            "Max_Position_Limit": POSITION_TICKS_PER_TURN - 1,
            "Min_Position_Limit": 0,
            "Position_P_Gain": 800,
            "Goal_Position": round(self._position),
            "Present_Position": round(self._position),
            "Present_Input_Voltage": self.spec.nominal_voltage_decivolt,
            "Present_Temperature": 30,
        }
        if self.spec.default_current_limit_raw is not None:
            defaults["Current_Limit"] = self.spec.default_current_limit_raw
            defaults["Goal_Current"] = self.spec.default_current_limit_raw  # firmware default = Current_Limit
        for name, value in defaults.items():
            self.set_field(name, value)

    # -- field access -------------------------------------------------------------------
    @property
    def servo_id(self) -> int:
        return self.get_field("ID")

    def get_field(self, name: str) -> int:
        address, size = self.spec.address(name)
        value = int.from_bytes(self.table[address : address + size], "little")
        return to_signed(value, size) if name in SIGNED_FIELDS else value

    def set_field(self, name: str, value: int) -> None:
        address, size = self.spec.address(name)
        self.table[address : address + size] = to_unsigned(int(value), size).to_bytes(size, "little")

    @property
    def torque_on(self) -> bool:
        return self.get_field("Torque_Enable") == 1

    @property
    def alert(self) -> int:
        """The status error byte's alert bit while a hardware error is latched."""
        return STATUS_ALERT_BIT if self.get_field("Hardware_Error_Status") else 0

    @property
    def baudrate(self) -> int:
        return BAUD_RATES.get(self.get_field("Baud_Rate"), 57600)

    @property
    def return_delay_s(self) -> float:
        return self.get_field("Return_Delay_Time") * RETURN_DELAY_UNIT_S

    def raise_hardware_error(self, bits: int, shutdown_mask: int = DEFAULT_SHUTDOWN_MASK) -> None:
        """Latch `bits` in Hardware_Error_Status; shutdown bits drop the torque like the firmware."""
        self.set_field("Hardware_Error_Status", self.get_field("Hardware_Error_Status") | bits)
        if bits & shutdown_mask:
            self.set_field("Torque_Enable", 0)

    # -- dynamics -------------------------------------------------------------------------
    def _goal(self) -> float:
        goal = float(self.get_field("Goal_Position"))
        if self.get_field("Operating_Mode") == POSITION_MODE:
            goal = min(max(goal, self.get_field("Min_Position_Limit")), self.get_field("Max_Position_Limit"))
        return goal

    def _current_cap(self) -> int | None:
        """Goal_Current clamped by Current_Limit in current-based position mode (raw); else None."""
        if "Current_Limit" not in self.spec.fields or self.get_field("Operating_Mode") != CURRENT_BASED_POSITION_MODE:
            return None
        return min(self.get_field("Current_Limit"), abs(self.get_field("Goal_Current")))

    def _drive_plant(self) -> None:
        if self.plant is not None:
            # Only the position-following modes hold a goal; in any other mode the joint is left limp.
            following = self.torque_on and self.get_field("Operating_Mode") in POSITION_FOLLOWING_MODES
            self.plant.drive(self.servo_id, following, round(self._goal()), self._current_cap())

    def _update_from_plant(self, plant: ServoPlant) -> None:
        self._drive_plant()
        self._position, self._velocity_ticks_per_s, current = plant.present(self.servo_id)
        # the plant caps the force itself: only the register's range bounds the reading
        self._set_present(current, self._current_limit())

    def _current_limit(self) -> int:
        """Current_Limit where the model has it; else the range Present_Current (Present_Load) reads in."""
        if "Current_Limit" in self.spec.fields:
            return self.get_field("Current_Limit")
        return self.spec.current_saturation_raw

    def _set_present(self, current: int, saturation: int) -> None:
        """Present_Position/Velocity from the servo's state, Present_Current within ±saturation, Moving."""
        self.set_field("Present_Position", round(self._position))
        velocity_units = self._velocity_ticks_per_s * 60.0 / POSITION_TICKS_PER_TURN / VELOCITY_UNIT_RPM
        self.set_field("Present_Velocity", round(velocity_units))
        self.set_field("Present_Current", max(-saturation, min(saturation, current)))
        self.set_field("Moving", int(abs(velocity_units) > self.get_field("Moving_Threshold")))

    def update(self, now: float) -> None:
        """Advance the dynamics to `now` and refresh the Present_* fields."""
        if self.plant is not None:
            self._update_from_plant(self.plant)
            return
        dt = max(0.0, now - self._last_update)
        self._last_update = now
        error = 0.0
        pushed = self.torque_on and now - self._manual_time <= MANUAL_VELOCITY_HOLD_S
        if pushed:
            # Held off its goal by a hand (the leader's gripper trigger): the motor pushes back
            # with its current (saturated by Current_Limit) but the position is the hand's.
            error = self._goal() - self._position
        elif self.torque_on and self.get_field("Operating_Mode") in POSITION_FOLLOWING_MODES:
            goal = self._goal()
            # Exact solution of x' = (goal - x) / tau over dt: stable for any dt.
            self._position = goal + (self._position - goal) * math.exp(-dt / self.time_constant_s)
            error = goal - self._position
            self._velocity_ticks_per_s = error / self.time_constant_s
        elif now - self._manual_time > MANUAL_VELOCITY_HOLD_S:
            self._velocity_ticks_per_s = 0.0
        cap = self._current_cap()  # current-based position mode: Goal_Current is the force cap
        self._set_present(round(CURRENT_PER_TICK_ERROR * error), self._current_limit() if cap is None else cap)

    def move_by_hand(self, raw: int, now: float) -> None:
        if self.torque_on and self.get_field("Operating_Mode") != CURRENT_BASED_POSITION_MODE:
            raise RuntimeError(
                f"servo {self.servo_id} has torque on and holds its goal; turn Torque_Enable off "
                "(or use current-based position mode, which yields to a hand) before moving it by hand"
            )
        self.update(now)
        dt = now - self._manual_time
        recent = 0.0 < dt <= MANUAL_VELOCITY_HOLD_S
        self._velocity_ticks_per_s = (raw - self._position) / dt if recent else 0.0
        self._manual_time = now
        self._position = float(raw)
        self.set_field("Present_Position", raw)

    # -- instructions ---------------------------------------------------------------------
    def read(self, address: int, length: int) -> tuple[int, bytes]:
        if length <= 0 or address < 0 or address + length > CONTROL_TABLE_SIZE:
            return p2.ERR_ACCESS, b""
        return p2.ERR_NONE, bytes(self.table[address : address + length])

    def write(self, address: int, data: bytes) -> int:
        """Apply a WRITE; returns the status error number (0 when it was applied)."""
        end = address + len(data)
        if not data:
            return p2.ERR_DATA_LENGTH
        if end > CONTROL_TABLE_SIZE:
            return p2.ERR_ACCESS
        if address < EEPROM_END and self.torque_on:
            return p2.ERR_ACCESS  # e-Manual: EEPROM is locked while Torque_Enable is 1
        touched = {
            name: (field_address, size)
            for name, (field_address, size) in self.spec.fields.items()
            if field_address < end and address < field_address + size
        }
        if any(name in READ_ONLY_FIELDS for name in touched):
            return p2.ERR_ACCESS
        staged = bytearray(self.table)
        staged[address:end] = data
        if self.goal_writes is not None and "Goal_Position" in touched:  # every goal received, applied or not
            goal_address, goal_size = self.spec.fields["Goal_Position"]
            raw = int.from_bytes(staged[goal_address : goal_address + goal_size], "little")
            self.goal_writes.append((time.monotonic(), to_signed(raw, goal_size)))
        error = self._check_values(staged, touched)
        if error:
            return error
        was_on = self.torque_on
        self.table[address:end] = data
        if not was_on and self.torque_on:
            # Real X-series firmware re-syncs the goal on torque-on so the joint does not jump.
            self.set_field("Goal_Position", round(self._position))
        self._drive_plant()  # a plant acts on a new goal at once, not at the next instruction
        return p2.ERR_NONE

    def _check_values(self, staged: bytearray, touched: dict[str, tuple[int, int]]) -> int:
        def value(name: str) -> int:
            address, size = self.spec.fields[name]
            raw = int.from_bytes(staged[address : address + size], "little")
            return to_signed(raw, size) if name in SIGNED_FIELDS else raw

        if "Torque_Enable" in touched and value("Torque_Enable") > 1:
            return p2.ERR_DATA_RANGE
        if "ID" in touched and value("ID") > 252:
            return p2.ERR_DATA_RANGE
        if "Operating_Mode" in touched and value("Operating_Mode") not in VALID_OPERATING_MODES:
            return p2.ERR_DATA_RANGE
        if (
            "Goal_Position" in touched
            and value("Operating_Mode") == POSITION_MODE
            and not value("Min_Position_Limit") <= value("Goal_Position") <= value("Max_Position_Limit")
        ):
            return p2.ERR_DATA_LIMIT
        return p2.ERR_NONE

    def reboot(self) -> None:
        self.set_field("Torque_Enable", 0)
        self.set_field("Hardware_Error_Status", 0)


@dataclass
class FaultInjector:
    """Faults the emulated bus applies to its next replies (thread-safe through the bus lock).

    `servo_id=None` means any servo. Counters say how many faults were actually applied, so a
    test can tell a fault that happened from one that was never exercised.
    """

    dropped_replies: dict[int | None, int] = field(default_factory=dict)
    corrupted_replies: dict[int | None, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=lambda: {"dropped": 0, "corrupted": 0})
    # Servos that stay silent on Fast Sync Read (firmware that claims it but mishandles it).
    no_fast_sync_read: set[int] = field(default_factory=set)

    def _take(self, pending: dict[int | None, int], servo_id: int) -> bool:
        for key in (servo_id, None):
            if pending.get(key, 0) > 0:
                pending[key] -= 1
                return True
        return False

    def take_drop(self, servo_id: int) -> bool:
        if self._take(self.dropped_replies, servo_id):
            self.applied["dropped"] += 1
            return True
        return False

    def take_corruption(self, servo_id: int) -> bool:
        if self._take(self.corrupted_replies, servo_id):
            self.applied["corrupted"] += 1
            return True
        return False

    def apply(self, servo_id: int, reply: bytes) -> bytes:
        if self.take_drop(servo_id):
            return b""
        if self.take_corruption(servo_id):
            return reply[:-1] + bytes([reply[-1] ^ 0xFF])
        return reply


class DynamixelBusEmulator:
    """A Dynamixel bus of Protocol 2.0 servos served on a pseudo-terminal."""

    def __init__(
        self,
        servos: list[tuple[int, int]],
        time_constant_s: float = 0.06,
        link_path: str | None = None,
        initial_positions: dict[int, int] | None = None,
        wire_timing: bool = False,
        return_delay_time: int = RETURN_DELAY_DEFAULT,
        plant: ServoPlant | None = None,
    ) -> None:
        if time_constant_s <= 0:
            raise ValueError(f"time_constant_s must be > 0, got {time_constant_s}")
        ids = [servo_id for servo_id, _ in servos]
        if len(set(ids)) != len(ids):
            raise ValueError(f"servo IDs must be unique on one bus, got {ids}")
        for servo_id in ids:
            if not 0 <= servo_id <= 252:
                raise ValueError(f"servo ID {servo_id} is outside 0..252")
        if not 0 <= return_delay_time <= 254:
            raise ValueError(f"return_delay_time is 0..254 (2 us units), got {return_delay_time}")
        initial_positions = initial_positions or {}
        self._servos = [
            EmulatedServo(
                servo_id, model_by_number(model), time_constant_s, initial_positions.get(servo_id, 2048), plant
            )
            for servo_id, model in servos
        ]
        for servo in self._servos:
            servo.set_field("Return_Delay_Time", return_delay_time)
        self.time_constant_s = time_constant_s
        self.link_path = link_path
        self.wire_timing = wire_timing
        self.faults = FaultInjector()
        self.baud_mismatches = 0  # packets ignored because the line baud differed from the servos'
        self._lock = threading.Lock()
        self._parser = p2.PacketParser()
        self._master_fd = -1
        self._slave_fd = -1
        self._wake_r = -1
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._port = ""
        self._unplugged = False

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def port(self) -> str:
        """The pty slave device to open (e.g. /dev/pts/5); `link_path` points here too."""
        if not self._port:
            raise RuntimeError("the emulator is not started; call start() first")
        return self._port

    def start(self) -> DynamixelBusEmulator:
        if self._thread is not None:
            return self
        self._master_fd, self._slave_fd = os.openpty()
        # Raw mode: no echo, no line discipline, 8-bit clean, like a USB serial adapter.
        tty.setraw(self._slave_fd)
        os.set_blocking(self._master_fd, False)
        self._port = os.ttyname(self._slave_fd)
        self._wake_r, self._wake_w = os.pipe()
        self._parser.clear()
        if self.link_path:
            self._create_link(self.link_path)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="dxl-emulator", daemon=True)
        self._thread.start()
        return self

    def _create_link(self, link_path: str) -> None:
        link = Path(link_path)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()  # stale link from an earlier run
        elif link.exists():
            raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
        link.symlink_to(self._port)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5.0)
        self._thread = None
        for fd in (self._master_fd, self._slave_fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master_fd = self._slave_fd = self._wake_r = self._wake_w = -1
        if self.link_path:
            link = Path(self.link_path)
            if link.is_symlink() and os.readlink(link) == self._port:
                link.unlink()

    def unplug(self) -> None:
        """Pull the USB cable: the pty hangs up (reads on it fail) and the link disappears.

        The servos keep their state (they are powered separately), as on the robot.
        """
        self.stop()
        self._unplugged = True

    @property
    def unplugged(self) -> bool:
        return self._unplugged

    def replug(self) -> None:
        """Plug the adapter back in: a new pty (a new device name), the link points at it."""
        if not self._unplugged:
            raise RuntimeError("replug() without unplug(): the emulator is already plugged in")
        self._unplugged = False
        self.start()

    def __enter__(self) -> DynamixelBusEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- direct access for tests and the simulator -----------------------------------------
    def _servo(self, servo_id: int) -> EmulatedServo:
        for servo in self._servos:
            if servo.servo_id == servo_id:
                return servo
        raise KeyError(f"no emulated servo with ID {servo_id}; IDs are {[s.servo_id for s in self._servos]}")

    def record_goals(self) -> None:
        """From now on, keep every Goal_Position write the servos apply (any instruction), for `take_goals`."""
        with self._lock:
            for servo in self._servos:
                if servo.goal_writes is None:
                    servo.goal_writes = []

    def take_goals(self) -> list[tuple[float, int, int]]:
        """(monotonic time, servo ID, Goal_Position raw) of the goal writes since the last call, in time order."""
        with self._lock:
            taken = []
            for servo in self._servos:
                if servo.goal_writes:
                    taken += [(t, servo.servo_id, raw) for t, raw in servo.goal_writes]
                    servo.goal_writes.clear()
        return sorted(taken)

    def present_positions(self) -> dict[int, int]:
        with self._lock:
            now = time.monotonic()
            for servo in self._servos:
                servo.update(now)
            return {servo.servo_id: servo.get_field("Present_Position") for servo in self._servos}

    def read_field(self, servo_id: int, name: str) -> int:
        with self._lock:
            servo = self._servo(servo_id)
            servo.update(time.monotonic())
            return servo.get_field(name)

    def write_field(self, servo_id: int, name: str, value: int) -> None:
        """Set a field directly, as Dynamixel Wizard on another adapter would (tests, set-up)."""
        with self._lock:
            servo = self._servo(servo_id)
            servo.update(time.monotonic())
            servo.set_field(name, value)

    def set_present_position(self, servo_id: int, raw: int) -> None:
        """Move a torque-off servo as a hand would (the simulated leader arm)."""
        with self._lock:
            self._servo(servo_id).move_by_hand(int(raw), time.monotonic())

    def set_hardware_error(self, servo_id: int, bits: int) -> None:
        """Latch Hardware_Error_Status bits (HW_*) on a servo; REBOOT clears them."""
        with self._lock:
            self._servo(servo_id).raise_hardware_error(bits)

    def drop_replies(self, count: int, servo_id: int | None = None) -> None:
        """The next `count` status packets (of `servo_id`, or of any servo) are never sent."""
        with self._lock:
            self.faults.dropped_replies[servo_id] = self.faults.dropped_replies.get(servo_id, 0) + count

    def corrupt_replies(self, count: int, servo_id: int | None = None) -> None:
        """The next `count` status packets go out with a wrong CRC."""
        with self._lock:
            self.faults.corrupted_replies[servo_id] = self.faults.corrupted_replies.get(servo_id, 0) + count

    # -- serving --------------------------------------------------------------------------
    def _line_baudrate(self) -> int | None:
        """The baud rate the client set on the pty (termios2), None where it cannot be read."""
        try:
            buf = array.array("i", [0] * 64)
            fcntl.ioctl(self._slave_fd, _TCGETS2, buf)
            return int(buf[10])
        except OSError:
            return None

    def _serve(self) -> None:
        last_rx = time.monotonic()
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master_fd, self._wake_r], [], [])
            if self._stop.is_set():
                return
            if self._master_fd not in readable:
                continue
            try:
                data = os.read(self._master_fd, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # no slave open right now; we hold one, so rare
                    time.sleep(0.01)
                    continue
                raise
            now = time.monotonic()
            if self._parser.pending and now - last_rx > PARTIAL_PACKET_TIMEOUT_S:
                self._parser.clear()
            last_rx = now
            for packet in self._parser.feed(data):
                try:
                    replies = self._handle(packet)
                except Exception:  # keep serving: one bad packet must not silence the whole bus
                    _LOG.exception("emulator failed to handle %s", packet)
                    continue
                self._send_replies(packet, replies, now)

    def _send_replies(self, packet: p2.Packet, replies: list[tuple[float, int, bytes]], received: float) -> None:
        """Send (return_delay_s, baudrate, bytes) replies in order, timed like the wire if asked."""
        if not replies:
            return
        if not self.wire_timing:
            self._send(b"".join(reply for _, _, reply in replies))
            return
        baud = replies[0][1]
        instruction_bytes = 8 + len(packet.params) + 2  # header 4, ID, LEN 2, INST | params | CRC 2
        # The pty delivers the instruction at once; on the wire its last byte arrives later.
        due = received + instruction_bytes * BITS_PER_BYTE / baud
        for delay_s, baud, reply in replies:
            due += delay_s + len(reply) * BITS_PER_BYTE / baud
            _sleep_until(due)
            self._send(reply)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master_fd, view)
            except BlockingIOError:
                return  # nobody is reading the bus; a real line would just drop it
            view = view[written:]

    def _handle(self, packet: p2.Packet) -> list[tuple[float, int, bytes]]:
        with self._lock:
            line_baud = self._line_baudrate()
            listening = [s for s in self._servos if line_baud is None or s.baudrate == line_baud]
            if len(listening) < len(self._servos):
                # Servos at another baud rate see only garbage on the line and stay silent.
                self.baud_mismatches += 1
            now = time.monotonic()
            for servo in self._servos:
                servo.update(now)
            if packet.instruction == p2.INST_SYNC_READ:
                return self._sync_read(packet.params, listening)
            if packet.instruction == p2.INST_FAST_SYNC_READ:
                return self._fast_sync_read(packet.params, listening)
            if packet.instruction == p2.INST_SYNC_WRITE:
                self._sync_write(packet.params, listening)
                return []
            if packet.servo_id == p2.BROADCAST_ID:
                return self._broadcast(packet, listening)
            addressed = next((s for s in listening if s.servo_id == packet.servo_id), None)
            if addressed is None:
                return []
            return self._reply(addressed, self._unicast(addressed, packet))

    def _reply(self, servo: EmulatedServo, status: bytes) -> list[tuple[float, int, bytes]]:
        status = self.faults.apply(servo.servo_id, status)
        return [(servo.return_delay_s, servo.baudrate, status)] if status else []

    def _broadcast(self, packet: p2.Packet, listening: list[EmulatedServo]) -> list[tuple[float, int, bytes]]:
        if packet.instruction == p2.INST_PING:
            ordered = sorted(listening, key=lambda s: s.servo_id)
            return [reply for servo in ordered for reply in self._reply(servo, self._ping_reply(servo))]
        if packet.instruction == p2.INST_WRITE and len(packet.params) > 2:
            address = packet.params[0] | (packet.params[1] << 8)
            for servo in listening:
                servo.write(address, packet.params[2:])
        return []

    @staticmethod
    def _ping_reply(servo: EmulatedServo) -> bytes:
        model = servo.get_field("Model_Number")
        params = bytes([model & 0xFF, model >> 8, servo.get_field("Firmware_Version")])
        return p2.build_status(servo.servo_id, p2.ERR_NONE | servo.alert, params)

    def _unicast(self, servo: EmulatedServo, packet: p2.Packet) -> bytes:
        params = packet.params
        alert = servo.alert
        if packet.instruction == p2.INST_PING:
            return self._ping_reply(servo)
        if packet.instruction == p2.INST_READ:
            if len(params) != 4:
                return p2.build_status(servo.servo_id, p2.ERR_DATA_LENGTH | alert)
            address, length = params[0] | (params[1] << 8), params[2] | (params[3] << 8)
            error, data = servo.read(address, length)
            return p2.build_status(servo.servo_id, error | alert, data)
        if packet.instruction == p2.INST_WRITE:
            if len(params) < 3:
                return p2.build_status(servo.servo_id, p2.ERR_DATA_LENGTH | alert)
            reply_id = servo.servo_id  # the status comes from the old ID even when ID changes
            error = servo.write(params[0] | (params[1] << 8), params[2:])
            return p2.build_status(reply_id, error | alert)
        if packet.instruction == p2.INST_REBOOT:
            servo.reboot()
            return p2.build_status(servo.servo_id, p2.ERR_NONE)
        return p2.build_status(servo.servo_id, p2.ERR_INSTRUCTION | alert)

    def _sync_read(self, params: bytes, listening: list[EmulatedServo]) -> list[tuple[float, int, bytes]]:
        if len(params) < 5:
            return []
        address, length = params[0] | (params[1] << 8), params[2] | (params[3] << 8)
        replies = []
        for servo_id in params[4:]:
            servo = next((s for s in listening if s.servo_id == servo_id), None)
            if servo is None:
                continue  # an absent servo stays silent; the client times out on it
            error, data = servo.read(address, length)
            replies.extend(self._reply(servo, p2.build_status(servo_id, error | servo.alert, data)))
        return replies

    def _fast_sync_read(self, params: bytes, listening: list[EmulatedServo]) -> list[tuple[float, int, bytes]]:
        """One status packet for all servos: ERR ID DATA CRC per servo, chained (e-Manual 0x8A).

        Each servo appends its part in turn; a silent or faulty servo truncates the packet there,
        so the client sees the whole read fail (which is why drivers fall back to Sync Read).
        """
        if len(params) < 5:
            return []
        address, length = params[0] | (params[1] << 8), params[2] | (params[3] << 8)
        parts = []
        corrupt = False
        for servo_id in params[4:]:
            servo = next((s for s in listening if s.servo_id == servo_id), None)
            if servo is None:
                break
            error, data = servo.read(address, length)
            if error:
                data = bytes(length)
            if servo_id in self.faults.no_fast_sync_read or self.faults.take_drop(servo_id):
                break  # this servo is silent: the chain stops here
            corrupt |= self.faults.take_corruption(servo_id)
            parts.append((servo, bytes([error | servo.alert, servo_id]) + data))
        if not parts:
            return []
        requested = len(params) - 4
        # LEN: instruction + every part + a CRC after each part (the last one is the packet's).
        length_field = 1 + sum(len(part) + 2 for _, part in parts)
        packet = bytearray(p2.HEADER + bytes([p2.BROADCAST_ID, length_field & 0xFF, length_field >> 8, p2.INST_STATUS]))
        crc, covered = 0, 0  # running CRC of packet[:covered]: each part's CRC covers all before it
        for index, (_, part) in enumerate(parts):
            packet += part
            if index < len(parts) - 1:
                crc, covered = p2.crc16(packet[covered:], crc), len(packet)
                packet += bytes([crc & 0xFF, crc >> 8])
        crc = p2.crc16(packet[covered:], crc) ^ (0xFFFF if corrupt else 0)
        packet += bytes([crc & 0xFF, crc >> 8])
        if len(parts) < requested:
            packet = packet[:-2]  # the chain broke: no final CRC ever arrives
        delay = sum(servo.return_delay_s for servo, _ in parts[:1])
        return [(delay, parts[0][0].baudrate, bytes(packet))]

    def _sync_write(self, params: bytes, listening: list[EmulatedServo]) -> None:
        if len(params) < 4:
            return
        address, length = params[0] | (params[1] << 8), params[2] | (params[3] << 8)
        record = 1 + length
        body = params[4:]
        for offset in range(0, len(body) - record + 1, record):
            servo_id = body[offset]
            servo = next((s for s in listening if s.servo_id == servo_id), None)
            if servo is not None:
                servo.write(address, body[offset + 1 : offset + record])


def _sleep_until(due: float) -> None:
    """Sleep to `due` (monotonic); the last fraction of a millisecond is spun for precision."""
    while True:
        remaining = due - time.monotonic()
        if remaining <= 0:
            return
        if remaining > 0.0005:
            time.sleep(remaining - 0.0003)


def _arm_servos(arm: str, config: str) -> tuple[list[tuple[int, int]], dict[int, int]]:
    from koch_common.robot import load_koch

    koch = load_koch(config)
    arm_config = koch.follower if arm == "follower" else koch.leader
    servos = [(joint.id, model_by_name(joint.model).model_number) for joint in arm_config.joints]
    return servos, {joint.id: joint.zero_raw for joint in arm_config.joints}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dxl_emulator", description="Serve the Koch arm's Dynamixel servos on a pseudo-terminal."
    )
    parser.add_argument("--arm", choices=("follower", "leader"), default="follower")
    parser.add_argument("--link", default=None, help="symlink to create, e.g. /tmp/koch_sim/follower")
    parser.add_argument("--time-constant", type=float, default=0.06, help="first-order response, seconds")
    parser.add_argument("--config", default="koch.yaml", help="arm description (default: config/koch.yaml)")
    parser.add_argument("--wire-timing", action="store_true",
                        help="release replies only after their bytes would have crossed the wire at the servos' baud")
    parser.add_argument("--return-delay-time", type=int, default=RETURN_DELAY_DEFAULT,
                        help=f"initial Return_Delay_Time in 2 us units (factory default {RETURN_DELAY_DEFAULT})")
    args = parser.parse_args(argv)

    servos, initial = _arm_servos(args.arm, args.config)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with DynamixelBusEmulator(servos, args.time_constant, args.link, initial, wire_timing=args.wire_timing,
                              return_delay_time=args.return_delay_time) as emulator:
        where = f"{emulator.port} (link {args.link})" if args.link else emulator.port
        print(f"dxl_emulator: {args.arm} servos {[i for i, _ in servos]} on {where}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
