"""The joint driver's ROS-free core: one bus loop per arm.

Each control step reads position/velocity/current of every servo in one sync read,
samples the active trajectory (or the latest streamed point), passes the result through the
shared safety limits and writes all goals in one sync write.

Faults never kill the loop. A failed read is retried inside the bus (bounded attempts); bus
errors that persist for `error_timeout_s`, or a port that disappears, mean the bus is lost:
the driver drops the active command (hold safe), closes the port and reconnects with
exponential backoff. A reconnect configures the servos again and syncs every goal to the
measured position (through the limits) before torque is enabled, so the first goal after a
reconnect is the present pose, never a stale command. Hardware_Error_Status is polled and
kept in `health`; a servo with a hardware error stops the arm following commands until
`reboot()`. A reply that does not decode is one more bus error (never an exception out of
`step`), and a port held by another process stops `connect` at once: two masters on one bus
fight over the arm, so the second one never starts.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from koch_common.dynamixel_models import OPERATING_MODES, decode_hardware_error, model_by_name
from koch_common.latency_trace import ChunkTrace
from koch_common.robot import ArmConfig
from koch_common.safety import SafetyLimits
from koch_driver.bus import BusError, DynamixelBus, PortBusyError, PortLostError
from koch_driver.trajectory import TimedTrajectory, TrajectoryFollower

# What decoding a malformed reply raises (the bus turns its own into BusError; `step` catches the rest).
_DECODE_ERRORS = (ValueError, IndexError, struct.error)
# Present_Current is in ~1 mA units on the XL330/XM430 (Present_Load, 0.1 %, on the XL430);
# effort is reported in those units scaled to amperes until per-model torque constants land.
CURRENT_UNIT_A = 0.001


@dataclass
class JointStateSample:
    stamp: float  # seconds on the caller's clock, taken right after the bus read
    names: list[str]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@dataclass
class DriverHealth:
    """What the driver knows about its bus, for /diagnostics."""

    connected: bool = False
    consecutive_errors: int = 0
    total_errors: int = 0
    reads: int = 0
    reconnects: int = 0
    last_error: str = ""
    hardware_errors: dict[int, int] = field(default_factory=dict)  # id -> Hardware_Error_Status
    torque: bool = False

    def hardware_error_text(self) -> dict[int, list[str]]:
        return {sid: decode_hardware_error(bits) for sid, bits in self.hardware_errors.items() if bits}


class ArmDriver:
    def __init__(self, arm: ArmConfig, limits: SafetyLimits, torque_enable: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.arm = arm
        self.clock = clock
        self.limits = limits
        self.torque_enable = torque_enable
        for joint in arm.joints:
            if joint.goal_current is not None and not model_by_name(joint.model).has_current_control:
                raise ValueError(f"joint {joint.name}: goal_current is set but a {joint.model} has no "
                                 "Goal_Current; remove it from koch.yaml")
            if joint.mode not in OPERATING_MODES:
                raise ValueError(f"joint {joint.name}: unknown mode {joint.mode!r} in koch.yaml; "
                                 f"use one of {sorted(OPERATING_MODES)}")
        self.bus = DynamixelBus(arm.port, arm.baudrate, arm.ids, {j.id: j.model for j in arm.joints},
                                fast_sync_read=arm.fast_sync_read)
        self.health = DriverHealth()
        self._follower = TrajectoryFollower()
        self._goal: np.ndarray | None = None
        self._goal_step = np.zeros(len(arm.joints))  # the last write's change of the goal; zeros: standing still
        self._first_error_at: float | None = None
        self._next_connect_at = 0.0
        self._backoff = arm.reconnect_min_s
        self._next_hw_poll = 0.0
        self.log: Callable[[str], None] = lambda _message: None
        # A command's receipt, until the first goal write sampled from it (its trace's driver half).
        self._receipt: ChunkTrace | None = None
        self.on_trace: Callable[[ChunkTrace], None] | None = None

    @property
    def torque_ids(self) -> list[int]:
        return [j.id for j in self.arm.joints if j.torque]

    @property
    def connected(self) -> bool:
        return self.health.connected

    @property
    def goal(self) -> np.ndarray | None:
        return None if self._goal is None else self._goal.copy()

    # -- connection ---------------------------------------------------------------------------
    def connect(self, timeout_s: float = 0.0, retry_period_s: float = 0.5) -> JointStateSample:
        """Open the port, check and configure every servo, and hold the present pose.

        A port that is not there yet (USB adapter enumerating, emulator starting) is retried
        until `timeout_s`; then the last error, which names port, ID and model, is raised. A port held by
        another process is not waited for: it is raised at once, naming the holder.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._connect_once()
            except PortBusyError:
                raise
            except BusError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(retry_period_s)

    def _connect_once(self) -> JointStateSample:
        try:
            self.bus.open()
            self.bus.ping_all()
            self._configure()
            state = self._resync()
        except BusError:
            self.bus.close()
            self.health.connected = False
            raise
        self.health.connected = True
        self.health.consecutive_errors = 0
        self._first_error_at = None
        self._backoff = self.arm.reconnect_min_s
        self._next_hw_poll = 0.0
        return state

    def _configure(self) -> None:
        """Return_Delay_Time and Operating_Mode per joint; torque off where the config says so.

        Both are EEPROM fields, writable only with torque off, so torque is dropped only on a
        servo whose settings differ: a reconnect to servos that kept their torque (USB cable
        pulled, servo power on) does not let the arm sag.
        """
        for joint in self.arm.joints:
            wanted = {"Return_Delay_Time": self.arm.return_delay_time, "Operating_Mode": OPERATING_MODES[joint.mode]}
            stale = {name: v for name, v in wanted.items() if self.bus.read_field(joint.id, name) != v}
            if stale or not (joint.torque and self.torque_enable):
                self.bus.set_torque(False, [joint.id])
            for name, value in stale.items():
                self.bus.write_field(joint.id, name, value)
            if joint.goal_current is not None:
                self.bus.write_field(joint.id, "Goal_Current", joint.goal_current)  # RAM: torque may be on

    def _resync(self) -> JointStateSample:
        """Goals := measured positions (inside the limits), written before torque comes on."""
        self._follower.clear()
        state = self.read()
        self._goal = self.limits.filter_point(state.position, state.position)
        if self.torque_enable:
            self._write_goal(self._goal, state.position)
            self.bus.set_torque(True, self.torque_ids)
            self.health.torque = True
        return state

    def close(self) -> None:
        self.bus.close()
        self.health.connected = False

    def _lose_bus(self, reason: str) -> None:
        """Hold safe: forget the active command, close the port, schedule a reconnect."""
        self._follower.clear()
        self.bus.close()
        self.health.connected = False
        self.health.torque = False
        self.log(f"bus on {self.arm.port} lost ({reason}); holding, reconnecting with backoff")
        self._next_connect_at = time.monotonic() + self._backoff

    def _try_reconnect(self) -> JointStateSample | None:
        now = time.monotonic()
        if now < self._next_connect_at:
            return None
        try:
            state = self._connect_once()
        except BusError as err:
            self.health.last_error = str(err)
            self._backoff = min(self._backoff * 2.0, self.arm.reconnect_max_s)
            self._next_connect_at = now + self._backoff
            return None
        self.health.reconnects += 1
        self.log(f"bus on {self.arm.port} reconnected; goals synced to the present pose")
        return state

    # -- cyclic -----------------------------------------------------------------------------
    def read(self) -> JointStateSample:
        position_raw, velocity_raw, current_raw = self.bus.read_state()
        return JointStateSample(
            stamp=self.clock(),
            names=self.arm.names,
            position=self.arm.from_raw(position_raw),
            velocity=self.arm.velocity_from_raw(velocity_raw),
            effort=np.asarray(current_raw, dtype=np.float64) * CURRENT_UNIT_A,
        )

    def command(self, trajectory: TimedTrajectory, now: float, trace_id: int | None = None) -> None:
        """Follow `trajectory` from now on. `trace_id` (the message's stamp, ns): report its receipt at `now`
        and its first goal write to `on_trace`."""
        if self._goal is None:
            raise RuntimeError("driver is not connected")
        if self.health.connected:
            self._follower.replace(trajectory, self._goal, now)
            if trace_id is not None and self.on_trace is not None:
                self._receipt = ChunkTrace(chunk_ns=trace_id, driver_receipt=now)

    def command_point(self, positions: np.ndarray, now: float) -> None:
        """Single-point streaming: go to `positions` now (through the limits, at the velocity limit)."""
        self.command(TimedTrajectory(np.array([now]), np.asarray(positions, np.float64)[None]), now)

    def hold(self) -> None:
        self._follower.clear()
        self._receipt = None

    def step(self, dt: float) -> JointStateSample | None:
        """One control cycle: read, sample the trajectory, limit, write. None: no state this cycle."""
        if not self.health.connected:
            return self._try_reconnect()
        try:
            state = self.read()
            self._poll_hardware_errors()
            desired = self._follower.sample(state.stamp)
            if self.health.hardware_errors and any(self.health.hardware_errors.values()):
                desired = None  # a servo in error (maybe torque off by its firmware): hold, do not chase
                self._follower.clear()
            previous = self._goal
            if desired is not None and self.torque_enable and previous is not None:
                goal = self.limits.filter_point(desired, state.position)
                goal = self.limits.next_goal(previous, self._goal_step, goal, dt)
                self._write_goal(goal, state.position)
                self._goal_step = self._goal - previous
                self._trace_write()
            else:
                self._goal_step[:] = 0.0  # no write: the goal stands still this period
        except PortLostError as err:
            self._goal_step[:] = 0.0
            self._record_error(err)
            self._lose_bus(str(err))
            return None
        except (BusError, *_DECODE_ERRORS) as exc:  # the bus maps its own decode errors; this is the last line
            self._goal_step[:] = 0.0  # no goal written this period
            error = exc if isinstance(exc, BusError) else BusError(
                f"control cycle on {self.arm.port} failed on a malformed value ({type(exc).__name__}: {exc})")
            self._record_error(error)
            assert self._first_error_at is not None
            if time.monotonic() - self._first_error_at >= self.arm.error_timeout_s:
                self._lose_bus(f"errors for {self.arm.error_timeout_s:.2f} s: {error}")
            return None
        self.health.consecutive_errors = 0
        self._first_error_at = None
        self.health.reads += 1
        return state

    def _trace_write(self) -> None:
        """The write that just returned is the first to carry the last command received: stamp it."""
        receipt, self._receipt = self._receipt, None
        if receipt is not None and self.on_trace is not None:
            receipt.bus_write = self.clock()
            self.on_trace(receipt)

    def _record_error(self, err: BusError) -> None:
        self.health.consecutive_errors += 1
        self.health.total_errors += 1
        self.health.last_error = str(err)
        if self._first_error_at is None:
            self._first_error_at = time.monotonic()

    def _poll_hardware_errors(self) -> None:
        now = time.monotonic()
        if now < self._next_hw_poll and not self.bus.alert_seen:
            return
        self._next_hw_poll = now + self.arm.hardware_error_poll_s
        self.bus.alert_seen = False
        errors = self.bus.read_hardware_errors()
        if errors != self.health.hardware_errors and any(errors.values()):
            text = "; ".join(f"ID {sid}: {', '.join(names)}" for sid, names in
                             ((sid, decode_hardware_error(b)) for sid, b in errors.items() if b))
            self.log(f"hardware error on {self.arm.port}: {text}; call reboot to clear")
        self.health.hardware_errors = errors

    def _write_goal(self, goal: np.ndarray, measured: np.ndarray) -> None:
        """The one place goals reach the bus: re-checked against the limits right here."""
        safe = self.limits.filter_point(goal, measured)
        self.bus.write_goal_positions(self.arm.to_raw(safe))
        self._goal = safe
        self._goal_step[:] = 0.0  # a resync's write; step() sets the step of its own writes

    # -- services ------------------------------------------------------------------------------
    def set_torque(self, enabled: bool) -> None:
        """Torque on (after syncing goals to the present pose) or off for the torque joints."""
        self._require_connected()
        if enabled:
            self.torque_enable = True
            self._resync()
        else:
            self._follower.clear()
            self.bus.set_torque(False, self.torque_ids)
            self.health.torque = False
            self.torque_enable = False

    def hold_here(self) -> np.ndarray:
        """Stop any command and hold the measured pose; returns it (radians)."""
        self._require_connected()
        self._follower.clear()
        state = self.read()
        self._goal = self.limits.filter_point(state.position, state.position)
        if self.health.torque:
            self._write_goal(self._goal, state.position)
        return self._goal.copy()

    def reboot(self) -> list[int]:
        """Reboot the servos in hardware error (all when none is), reconfigure, resync, restore torque."""
        self._require_connected()
        faulty = [sid for sid, bits in self.health.hardware_errors.items() if bits] or self.arm.ids
        for servo_id in faulty:
            self.bus.reboot(servo_id)
        deadline = time.monotonic() + 3.0  # a real servo takes ~1 s to boot
        while True:
            try:
                self.bus.ping_all()
                break
            except BusError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._configure()
        self.health.hardware_errors = self.bus.read_hardware_errors()
        self._resync()
        return faulty

    def _require_connected(self) -> None:
        if not self.health.connected:
            raise BusError(f"the bus on {self.arm.port} is not connected (reconnecting); try again later")

    def joint_order(self, names: list[str]) -> list[int]:
        """Index of each of the arm's joints in `names`; a clear error for missing joints."""
        missing = [n for n in self.arm.names if n not in names]
        if missing:
            raise ValueError(f"command lacks joint(s) {missing}; expected {self.arm.names}")
        return [names.index(n) for n in self.arm.names]
