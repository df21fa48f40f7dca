"""Dynamixel Protocol 2.0 servos emulated behind a pseudo-terminal (ROS-free).

The driver opens the pty's slave side with the real dynamixel_sdk exactly as it opens a
U2D2 adapter, so the sim exercises the same bus code as the robot. Each servo has a byte
control table laid out from `koch_common.dynamixel_models`; with torque on, Present_Position
follows Goal_Position as a first-order lag, integrated lazily from the monotonic clock
before every instruction (no busy loop). With torque off a position only changes through
`set_present_position`, which is how the simulated leader arm is "moved by hand".
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import select
import signal
import sys
import threading
import time
import tty
from pathlib import Path
from types import FrameType, TracebackType

from koch_common.dynamixel_models import (
    CONTROL_TABLE_SIZE,
    EEPROM_END,
    POSITION_TICKS_PER_TURN,
    READ_ONLY_FIELDS,
    SIGNED_FIELDS,
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


class EmulatedServo:
    """One servo: control table bytes plus the first-order position dynamics."""

    def __init__(self, servo_id: int, spec: ModelSpec, time_constant_s: float, initial_position: int) -> None:
        self.spec = spec
        self.time_constant_s = time_constant_s
        self.table = bytearray(CONTROL_TABLE_SIZE)
        self._position = float(initial_position)
        self._velocity_ticks_per_s = 0.0
        self._last_update = time.monotonic()
        self._manual_time = -math.inf
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

    # -- dynamics -------------------------------------------------------------------------
    def _goal(self) -> float:
        goal = float(self.get_field("Goal_Position"))
        if self.get_field("Operating_Mode") == POSITION_MODE:
            goal = min(max(goal, self.get_field("Min_Position_Limit")), self.get_field("Max_Position_Limit"))
        return goal

    def update(self, now: float) -> None:
        """Advance the dynamics to `now` and refresh the Present_* fields."""
        dt = max(0.0, now - self._last_update)
        self._last_update = now
        error = 0.0
        if self.torque_on and self.get_field("Operating_Mode") in POSITION_FOLLOWING_MODES:
            goal = self._goal()
            # Exact solution of x' = (goal - x) / tau over dt: stable for any dt.
            self._position = goal + (self._position - goal) * math.exp(-dt / self.time_constant_s)
            error = goal - self._position
            self._velocity_ticks_per_s = error / self.time_constant_s
        elif now - self._manual_time > MANUAL_VELOCITY_HOLD_S:
            self._velocity_ticks_per_s = 0.0
        self.set_field("Present_Position", round(self._position))
        velocity_units = self._velocity_ticks_per_s * 60.0 / POSITION_TICKS_PER_TURN / VELOCITY_UNIT_RPM
        self.set_field("Present_Velocity", round(velocity_units))
        has_limit = "Current_Limit" in self.spec.fields
        saturation = self.get_field("Current_Limit") if has_limit else self.spec.current_saturation_raw
        current = max(-saturation, min(saturation, round(CURRENT_PER_TICK_ERROR * error)))
        self.set_field("Present_Current", current)
        self.set_field("Moving", int(abs(velocity_units) > self.get_field("Moving_Threshold")))

    def move_by_hand(self, raw: int, now: float) -> None:
        if self.torque_on:
            raise RuntimeError(
                f"servo {self.servo_id} has torque on and holds its goal; turn Torque_Enable off "
                "before moving it by hand"
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
        error = self._check_values(staged, touched)
        if error:
            return error
        was_on = self.torque_on
        self.table[address:end] = data
        if not was_on and self.torque_on:
            # Real X-series firmware re-syncs the goal on torque-on so the joint does not jump.
            self.set_field("Goal_Position", round(self._position))
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


class DynamixelBusEmulator:
    """A Dynamixel bus of Protocol 2.0 servos served on a pseudo-terminal."""

    def __init__(
        self,
        servos: list[tuple[int, int]],
        time_constant_s: float = 0.06,
        link_path: str | None = None,
        initial_positions: dict[int, int] | None = None,
    ) -> None:
        if time_constant_s <= 0:
            raise ValueError(f"time_constant_s must be > 0, got {time_constant_s}")
        ids = [servo_id for servo_id, _ in servos]
        if len(set(ids)) != len(ids):
            raise ValueError(f"servo IDs must be unique on one bus, got {ids}")
        for servo_id in ids:
            if not 0 <= servo_id <= 252:
                raise ValueError(f"servo ID {servo_id} is outside 0..252")
        initial_positions = initial_positions or {}
        self._servos = [
            EmulatedServo(
                servo_id, model_by_number(model), time_constant_s, initial_positions.get(servo_id, 2048)
            )
            for servo_id, model in servos
        ]
        self.time_constant_s = time_constant_s
        self.link_path = link_path
        self._lock = threading.Lock()
        self._parser = p2.PacketParser()
        self._master_fd = -1
        self._slave_fd = -1
        self._wake_r = -1
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._port = ""

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

    def set_present_position(self, servo_id: int, raw: int) -> None:
        """Move a torque-off servo as a hand would (the simulated leader arm)."""
        with self._lock:
            self._servo(servo_id).move_by_hand(int(raw), time.monotonic())

    # -- serving --------------------------------------------------------------------------
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
                    reply = self._handle(packet)
                except Exception:  # keep serving: one bad packet must not silence the whole bus
                    _LOG.exception("emulator failed to handle %s", packet)
                    continue
                if reply:
                    self._send(reply)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master_fd, view)
            except BlockingIOError:
                return  # nobody is reading the bus; a real line would just drop it
            view = view[written:]

    def _handle(self, packet: p2.Packet) -> bytes:
        with self._lock:
            now = time.monotonic()
            for servo in self._servos:
                servo.update(now)
            if packet.instruction == p2.INST_SYNC_READ:
                return self._sync_read(packet.params)
            if packet.instruction == p2.INST_SYNC_WRITE:
                self._sync_write(packet.params)
                return b""
            if packet.servo_id == p2.BROADCAST_ID:
                return self._broadcast(packet)
            servo = next((s for s in self._servos if s.servo_id == packet.servo_id), None)
            if servo is None:
                return b""
            return self._unicast(servo, packet)

    def _broadcast(self, packet: p2.Packet) -> bytes:
        if packet.instruction == p2.INST_PING:
            ordered = sorted(self._servos, key=lambda s: s.servo_id)
            return b"".join(self._ping_reply(servo) for servo in ordered)
        if packet.instruction == p2.INST_WRITE and len(packet.params) > 2:
            address = packet.params[0] | (packet.params[1] << 8)
            for servo in self._servos:
                servo.write(address, packet.params[2:])
        return b""

    @staticmethod
    def _ping_reply(servo: EmulatedServo) -> bytes:
        model = servo.get_field("Model_Number")
        params = bytes([model & 0xFF, model >> 8, servo.get_field("Firmware_Version")])
        return p2.build_status(servo.servo_id, p2.ERR_NONE, params)

    def _unicast(self, servo: EmulatedServo, packet: p2.Packet) -> bytes:
        params = packet.params
        if packet.instruction == p2.INST_PING:
            return self._ping_reply(servo)
        if packet.instruction == p2.INST_READ:
            if len(params) != 4:
                return p2.build_status(servo.servo_id, p2.ERR_DATA_LENGTH)
            address, length = params[0] | (params[1] << 8), params[2] | (params[3] << 8)
            error, data = servo.read(address, length)
            return p2.build_status(servo.servo_id, error, data)
        if packet.instruction == p2.INST_WRITE:
            if len(params) < 3:
                return p2.build_status(servo.servo_id, p2.ERR_DATA_LENGTH)
            reply_id = servo.servo_id  # the status comes from the old ID even when ID changes
            error = servo.write(params[0] | (params[1] << 8), params[2:])
            return p2.build_status(reply_id, error)
        if packet.instruction == p2.INST_REBOOT:
            servo.reboot()
            return p2.build_status(servo.servo_id, p2.ERR_NONE)
        return p2.build_status(servo.servo_id, p2.ERR_INSTRUCTION)

    def _sync_read(self, params: bytes) -> bytes:
        if len(params) < 5:
            return b""
        address, length = params[0] | (params[1] << 8), params[2] | (params[3] << 8)
        replies = []
        for servo_id in params[4:]:
            servo = next((s for s in self._servos if s.servo_id == servo_id), None)
            if servo is None:
                continue  # an absent servo stays silent; the client times out on it
            error, data = servo.read(address, length)
            replies.append(p2.build_status(servo_id, error, data))
        return b"".join(replies)

    def _sync_write(self, params: bytes) -> None:
        if len(params) < 4:
            return
        address, length = params[0] | (params[1] << 8), params[2] | (params[3] << 8)
        record = 1 + length
        body = params[4:]
        for offset in range(0, len(body) - record + 1, record):
            servo_id = body[offset]
            servo = next((s for s in self._servos if s.servo_id == servo_id), None)
            if servo is not None:
                servo.write(address, body[offset + 1 : offset + record])


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
    args = parser.parse_args(argv)

    servos, initial = _arm_servos(args.arm, args.config)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with DynamixelBusEmulator(servos, args.time_constant, args.link, initial) as emulator:
        where = f"{emulator.port} (link {args.link})" if args.link else emulator.port
        print(f"dxl_emulator: {args.arm} servos {[i for i, _ in servos]} on {where}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
