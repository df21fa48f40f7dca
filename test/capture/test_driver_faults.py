"""ArmDriver (real dynamixel_sdk) against the emulator with injected faults.

For every fault: the driver survives (step() never raises), reports it (health and
/diagnostics content), and no goal it writes is ever outside the safety limits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from koch_common.dynamixel_models import OPERATING_MODES, model_by_name, shared_field
from koch_common.robot import ArmConfig, load_koch
from koch_common.safety import SafetyLimits
from koch_driver.bus import BusError, DynamixelBus
from koch_driver.driver import ArmDriver
from koch_driver.driver_node import diagnostics_msg
from koch_sim.dxl_emulator import HW_OVERLOAD, DynamixelBusEmulator

KOCH = load_koch()
DT = 0.02
# The test host may starve the emulator thread; only the reconnect timing depends on this.
SLACK_MS = 200.0


def follower_servos(arm: ArmConfig) -> list[tuple[int, int]]:
    return [(j.id, model_by_name(j.model).model_number) for j in arm.joints]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[DynamixelBusEmulator]:
    # Start away from zero so "goals synced to present" is not trivially the default 2048.
    initial = {1: 2300, 2: 1900, 3: 2100, 4: 2000, 5: 2048, 6: 2200}
    with DynamixelBusEmulator(follower_servos(KOCH.follower), time_constant_s=0.05,
                              link_path=str(tmp_path / "follower"), initial_positions=initial) as emu:
        yield emu


class RecordingDriver(ArmDriver):
    """ArmDriver that keeps every goal it sends (in radians) for the limit checks."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[np.ndarray] = []
        self.bus.timeout_slack_ms = SLACK_MS
        original = self.bus.write_goal_positions

        def record(raw: np.ndarray) -> None:
            self.sent.append(self.arm.from_raw(np.asarray(raw)))
            original(raw)

        self.bus.write_goal_positions = record  # type: ignore[method-assign]

    def assert_goals_within_limits(self) -> None:
        assert self.sent, "no goal was ever sent"
        goals = np.array(self.sent)
        tolerance = 1e-3  # one raw tick is 1.5e-3 rad; rounding may cross the margin by half of it
        assert np.all(goals >= self.limits.lower - tolerance) and np.all(goals <= self.limits.upper + tolerance)


@pytest.fixture
def driver(tmp_path: Path, emulator: DynamixelBusEmulator) -> Iterator[RecordingDriver]:
    arm = dataclasses.replace(KOCH.follower, port=str(tmp_path / "follower"), error_timeout_s=0.2,
                              reconnect_min_s=0.05, reconnect_max_s=0.2, hardware_error_poll_s=0.0)
    drv = RecordingDriver(arm, SafetyLimits.for_arm(arm, KOCH.safety))
    drv.connect(timeout_s=5.0)
    yield drv
    drv.close()


def run(driver: ArmDriver, seconds: float, until=None) -> list:
    """Step the driver at the control period; stops early when `until()` holds."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(driver.step(DT))  # must never raise, whatever the bus does
        if until is not None and until():
            break
        time.sleep(DT)
    return samples


def far_command(driver: ArmDriver) -> None:
    """A command far outside every limit, with a NaN: whatever happens, goals stay legal."""
    now = driver.clock()
    driver.command_point(np.array([9.0, -9.0, 9.0, -9.0, 9.0, 9.0]), now)


def test_connect_configures_and_syncs_goals_before_torque(driver: RecordingDriver,
                                                          emulator: DynamixelBusEmulator) -> None:
    for joint in KOCH.follower.joints:
        assert emulator.read_field(joint.id, "Return_Delay_Time") == 0
        assert emulator.read_field(joint.id, "Operating_Mode") == OPERATING_MODES[joint.mode]
        assert emulator.read_field(joint.id, "Torque_Enable") == 1
        # The first goal written is the measured pose, not the default 2048 or a stale command.
        assert emulator.read_field(joint.id, "Goal_Position") == emulator.read_field(joint.id, "Present_Position")
    assert emulator.read_field(6, "Operating_Mode") == 5  # gripper: current-based position
    assert emulator.read_field(6, "Goal_Current") == 500  # ... gripping with at most this current
    emulator.set_present_position(6, emulator.read_field(6, "Goal_Position") + 800)  # an object in the jaws
    assert emulator.read_field(6, "Present_Current") == -500
    assert emulator.read_field(1, "Operating_Mode") == 4  # joints: extended position
    assert driver.bus.uses_fast_sync_read  # firmware 52 everywhere


@pytest.mark.parametrize("fault", ["drop", "crc"])
def test_transient_reply_faults_are_retried(driver: RecordingDriver, emulator: DynamixelBusEmulator,
                                            fault: str) -> None:
    inject = emulator.drop_replies if fault == "drop" else emulator.corrupt_replies
    far_command(driver)
    inject(2, servo_id=3)
    samples = run(driver, 0.5)
    assert emulator.faults.applied["dropped" if fault == "drop" else "corrupted"] == 2
    assert driver.bus.retries >= 1 and driver.health.connected
    assert sum(s is not None for s in samples) >= len(samples) - 1  # at most one cycle lost
    driver.assert_goals_within_limits()


def test_fast_sync_read_falls_back_to_plain_sync_read(driver: RecordingDriver,
                                                      emulator: DynamixelBusEmulator) -> None:
    # A servo that keeps breaking the fast chain while answering plain reads: fall back for good.
    emulator.faults.no_fast_sync_read.add(5)
    run(driver, 1.0, until=lambda: not driver.bus.uses_fast_sync_read)
    assert not driver.bus.uses_fast_sync_read and driver.bus.fast_fallbacks >= 3
    assert driver.step(DT) is not None


def test_old_firmware_and_mx64_use_plain_sync_read(tmp_path: Path) -> None:
    with DynamixelBusEmulator([(1, 1200), (2, 311), (3, 1020)]) as emu:
        with DynamixelBus(emu.port, 1_000_000, [1, 3], {3: "xm430-w350"}) as bus:
            assert bus.ping_all() == {1: 1200, 3: 1020}
            assert bus.model_of(3).name == "XM430-W350"  # selected by the model number read at ping
            assert bus.uses_fast_sync_read
        with DynamixelBus(emu.port, 1_000_000, [1, 2]) as bus:
            assert bus.ping_all() == {1: 1200, 2: 311}
            assert not bus.uses_fast_sync_read  # MX-64(2.0): plain Sync Read
            assert bus.read_state()[0].tolist() == [2048, 2048]
        emu.write_field(1, "Firmware_Version", 40)
        with DynamixelBus(emu.port, 1_000_000, [1]) as bus:
            bus.ping_all()
            assert not bus.uses_fast_sync_read


def test_persistent_errors_lose_the_bus_then_reconnect(driver: RecordingDriver,
                                                       emulator: DynamixelBusEmulator) -> None:
    far_command(driver)
    emulator.drop_replies(10_000, servo_id=2)
    run(driver, 5.0, until=lambda: not driver.health.connected)
    assert not driver.health.connected and driver.health.total_errors > 0
    assert "ID 2" in driver.health.last_error
    message = diagnostics_msg("driver", "follower", driver, 0.0)
    assert message.status[0].level == DiagnosticStatus.ERROR
    emulator.faults.dropped_replies.clear()
    run(driver, 5.0, until=lambda: driver.health.connected)
    assert driver.health.connected and driver.health.reconnects == 1
    # The stale far command was dropped: the arm holds where it is.
    sent_before = len(driver.sent)
    run(driver, 0.3)
    assert len(driver.sent) == sent_before, "no command may be resumed after a reconnect"
    driver.assert_goals_within_limits()


def test_unplug_holds_and_reconnects_with_goals_at_present(driver: RecordingDriver,
                                                           emulator: DynamixelBusEmulator) -> None:
    far_command(driver)
    run(driver, 0.2)
    emulator.unplug()
    samples = run(driver, 3.0, until=lambda: not driver.health.connected)
    assert samples[-1] is None and not driver.health.connected
    assert "unplugged" in driver.health.last_error
    far_command(driver)  # a command arriving while disconnected is ignored
    # The arm is pushed while the driver is away (servo power stays on; torque drops for this test).
    emulator.write_field(4, "Torque_Enable", 0)
    emulator.set_present_position(4, 1700)
    run(driver, 0.5)  # reconnect attempts fail with backoff while the port is missing
    assert not driver.health.connected
    emulator.replug()
    run(driver, 5.0, until=lambda: driver.health.connected)
    assert driver.health.connected and driver.health.reconnects == 1
    present = emulator.present_positions()
    goal4 = emulator.read_field(4, "Goal_Position")
    assert abs(goal4 - present[4]) <= 1, "goals are synced to the present pose before torque comes back"
    assert emulator.read_field(4, "Torque_Enable") == 1
    driver.assert_goals_within_limits()


def test_hardware_error_is_reported_holds_and_reboot_clears_it(driver: RecordingDriver,
                                                               emulator: DynamixelBusEmulator) -> None:
    emulator.set_hardware_error(2, HW_OVERLOAD)
    far_command(driver)
    run(driver, 2.0, until=lambda: driver.health.hardware_errors.get(2))
    assert driver.health.hardware_errors[2] == HW_OVERLOAD
    assert driver.health.hardware_error_text() == {2: ["overload error"]}
    assert emulator.read_field(2, "Torque_Enable") == 0  # the firmware's shutdown
    sent = len(driver.sent)
    run(driver, 0.2)
    assert len(driver.sent) == sent, "no goals are chased while a servo is in hardware error"
    message = diagnostics_msg("driver", "follower", driver, 0.0)
    servo2 = next(s for s in message.status if "ID 2" in s.name)
    assert servo2.level == DiagnosticStatus.ERROR and "overload" in servo2.message
    assert "XL430-W250" in servo2.hardware_id
    assert driver.reboot() == [2]
    assert emulator.read_field(2, "Hardware_Error_Status") == 0
    assert emulator.read_field(2, "Torque_Enable") == 1
    assert not any(driver.health.hardware_errors.values())
    driver.assert_goals_within_limits()


def test_services_torque_hold_and_streaming(driver: RecordingDriver, emulator: DynamixelBusEmulator) -> None:
    driver.set_torque(False)
    assert [emulator.read_field(i, "Torque_Enable") for i in KOCH.follower.ids] == [0] * 6
    emulator.set_present_position(1, 2600)
    driver.set_torque(True)
    assert abs(emulator.read_field(1, "Goal_Position") - 2600) <= 1
    target = np.array([0.3, 0.2, -0.2, 0.1, 0.0, 0.4])
    driver.command_point(target, driver.clock())
    samples = run(driver, 5.0, until=lambda: np.allclose(driver.read().position, target, atol=0.01))
    assert samples and np.allclose(driver.read().position, target, atol=0.01)
    held = driver.hold_here()
    np.testing.assert_allclose(held, target, atol=0.01)
    driver.assert_goals_within_limits()


def test_wrong_baud_rate_is_named(emulator: DynamixelBusEmulator) -> None:
    for servo_id in range(1, 7):
        emulator.write_field(servo_id, "Baud_Rate", 1)  # servos at 57600, like from the factory
    with DynamixelBus(emulator.port, 1_000_000, [1, 2], attempts=1) as bus, \
            pytest.raises(BusError, match=rf"servo ID 1 .*{emulator.port} at 1000000 baud but answers at "
                                          r"57600 baud \(model number 1060\): wrong baud rate"):
        bus.ping_all()


def test_unknown_model_number_is_named(emulator: DynamixelBusEmulator) -> None:
    emulator.write_field(3, "Model_Number", 4242)
    with DynamixelBus(emulator.port, 1_000_000, [3]) as bus, \
            pytest.raises(BusError, match=rf"servo ID 3 on {emulator.port} reports unknown model number 4242"):
        bus.ping_all()


def test_permission_denied_is_named(tmp_path: Path, emulator: DynamixelBusEmulator) -> None:
    """EACCES on open names the port and the fix (dialout group / udev MODE).

    Root ignores file modes, so as root the open error pyserial raises is fed to the bus's
    error mapping directly; as any other user the pty really is made unreadable.
    """
    import errno
    import os

    import serial

    bus = DynamixelBus(emulator.port, 1_000_000, [1])
    if os.geteuid() != 0:
        os.chmod(emulator.port, 0)
        with pytest.raises(BusError, match=rf"permission denied opening {emulator.port}.*dialout"):
            bus.open()
    message = bus._open_error(serial.SerialException(errno.EACCES, f"could not open port {emulator.port}: "
                                                                   "[Errno 13] Permission denied"))
    assert message.startswith(f"permission denied opening {emulator.port}") and "dialout" in message


class CrosstalkEmulator(DynamixelBusEmulator):
    """Answers the next `crosstalk` sync reads as if they had asked for Hardware_Error_Status: well-formed
    packets with valid CRCs but 1 byte per servo where 10 were asked for, the reply a driver reads when
    another master on the same line sent the request (what two drivers on one port saw)."""

    crosstalk = 0

    def _handle(self, packet):  # type: ignore[no-untyped-def]
        from koch_sim import protocol2 as p2

        if self.crosstalk > 0 and packet.instruction in (p2.INST_SYNC_READ, p2.INST_FAST_SYNC_READ):
            self.crosstalk -= 1
            address, length = shared_field("Hardware_Error_Status")
            params = bytes([address & 0xFF, address >> 8, length, 0]) + packet.params[4:]
            packet = dataclasses.replace(packet, params=params)
        return super()._handle(packet)


@pytest.mark.parametrize("fast", [True, False], ids=["fast_sync_read", "sync_read"])
def test_malformed_replies_are_counted_bus_errors_never_exceptions(tmp_path: Path, fast: bool) -> None:
    """A short reply used to reach the state decoding and raise ValueError out of step(). Now it is a
    failed attempt of the read: retried, then a bus error counted like any other, and after
    error_timeout_s the bus is lost and reconnected, the goals synced to the present pose."""
    arm = dataclasses.replace(KOCH.follower, port=str(tmp_path / "follower"), error_timeout_s=0.2,
                              reconnect_min_s=0.05, reconnect_max_s=0.2, hardware_error_poll_s=1.0,
                              fast_sync_read=fast)
    with CrosstalkEmulator(follower_servos(arm), link_path=arm.port) as emulator:
        driver = RecordingDriver(arm, SafetyLimits.for_arm(arm, KOCH.safety))
        driver.connect(timeout_s=5.0)
        try:
            assert driver.bus.uses_fast_sync_read is fast
            far_command(driver)
            emulator.crosstalk = 1  # one bad reply: the bus's retry answers the read
            assert driver.step(DT) is not None
            assert driver.bus.retries >= 1 and driver.health.total_errors == 0
            emulator.crosstalk = 10_000  # every reply: errors, then the bus is lost
            run(driver, 5.0, until=lambda: not driver.health.connected)
            assert not driver.health.connected and driver.health.total_errors > 0
            assert "malformed" in driver.health.last_error and str(arm.port) in driver.health.last_error
            emulator.crosstalk = 0
            run(driver, 5.0, until=lambda: driver.health.connected)
            assert driver.health.connected and driver.step(DT) is not None
            driver.assert_goals_within_limits()
        finally:
            driver.close()


def test_a_traced_command_reports_its_receipt_and_the_first_goal_write_that_carries_it(
        driver: RecordingDriver) -> None:
    from koch_common.latency_trace import ChunkTrace
    from koch_driver.trajectory import TimedTrajectory

    traces: list[ChunkTrace] = []
    driver.on_trace = traces.append
    start = driver.read().position
    received = driver.clock()
    trajectory = TimedTrajectory(received + np.arange(5) / 30.0, start + np.linspace(0, 0.05, 5)[:, None])
    written = len(driver.sent)  # connecting synced the goals
    driver.command(trajectory, received, trace_id=123)
    assert traces == []  # nothing written since: no trace
    run(driver, 0.2)
    assert len(traces) == 1 and len(driver.sent) >= written + 2  # the first write carries it, later ones do not
    assert traces[0].chunk_ns == 123 and received == traces[0].driver_receipt <= traces[0].bus_write
    driver.command(trajectory, driver.clock(), trace_id=124)
    driver.hold()  # a hold before the write: the command never reached the bus
    run(driver, 0.1)
    assert len(traces) == 1
