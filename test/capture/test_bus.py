"""DynamixelBus (real dynamixel_sdk) against the emulated Koch follower on a pty."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from koch_common.dynamixel_models import model_by_name
from koch_common.robot import ArmConfig, load_koch
from koch_driver.bus import BusError, DynamixelBus
from koch_sim.dxl_emulator import DynamixelBusEmulator


@pytest.fixture
def arm() -> ArmConfig:
    return load_koch().follower


@pytest.fixture
def emulator(arm: ArmConfig) -> Iterator[DynamixelBusEmulator]:
    servos = [(j.id, model_by_name(j.model).model_number) for j in arm.joints]
    with DynamixelBusEmulator(servos, time_constant_s=0.1) as emu:
        yield emu


@pytest.fixture
def bus(arm: ArmConfig, emulator: DynamixelBusEmulator) -> Iterator[DynamixelBus]:
    with DynamixelBus(emulator.port, arm.baudrate, arm.ids, {j.id: j.model for j in arm.joints}) as opened:
        yield opened


def wait_for_positions(bus: DynamixelBus, goal: np.ndarray, timeout_s: float = 3.0) -> np.ndarray:
    deadline = time.monotonic() + timeout_s
    while True:
        position, _, _ = bus.read_state()
        if np.array_equal(position, goal) or time.monotonic() > deadline:
            return position
        time.sleep(0.02)


def test_ping_all_returns_the_configured_models(bus: DynamixelBus) -> None:
    assert bus.ping_all() == {1: 1060, 2: 1060, 3: 1200, 4: 1200, 5: 1200, 6: 1200}


def test_read_state_shapes_and_initial_values(bus: DynamixelBus) -> None:
    position, velocity, current = bus.read_state()
    for array in (position, velocity, current):
        assert array.shape == (6,)
        assert np.issubdtype(array.dtype, np.integer)
    np.testing.assert_array_equal(position, np.full(6, 2048))
    np.testing.assert_array_equal(velocity, np.zeros(6))
    np.testing.assert_array_equal(current, np.zeros(6))


def test_goal_write_converges_with_signed_velocity_and_current(
    bus: DynamixelBus, arm: ArmConfig, emulator: DynamixelBusEmulator
) -> None:
    bus.ping_all()
    bus.set_torque(True)
    goal = arm.to_raw(np.array([0.5, -0.5, 0.8, -0.8, 1.0, 0.3]))
    bus.write_goal_positions(goal)
    time.sleep(0.03)
    position, velocity, current = bus.read_state()
    moving_up = goal > 2048
    # Joints heading down report negative velocity and current: the signed conversion works.
    assert np.all(velocity[moving_up] > 0) and np.all(velocity[~moving_up] < 0)
    assert np.all(current[moving_up] > 0) and np.all(current[~moving_up] < 0)
    final = wait_for_positions(bus, goal)
    np.testing.assert_array_equal(final, goal)
    np.testing.assert_allclose(arm.from_raw(final), [0.5, -0.5, 0.8, -0.8, 1.0, 0.3], atol=2e-3)
    assert emulator.present_positions() == {i: int(g) for i, g in zip(arm.ids, goal, strict=True)}
    bus.set_torque(False)
    assert [bus.read_field(i, "Torque_Enable") for i in arm.ids] == [0] * 6


def test_leader_moved_by_hand_is_read_back(bus: DynamixelBus, emulator: DynamixelBusEmulator) -> None:
    emulator.set_present_position(3, 1000)
    position, _, _ = bus.read_state()
    assert position[2] == 1000


def test_fields_round_trip_with_signs(bus: DynamixelBus) -> None:
    bus.write_field(2, "Homing_Offset", -300)
    assert bus.read_field(2, "Homing_Offset") == -300
    bus.write_field(3, "Current_Limit", 900)
    assert bus.read_field(3, "Current_Limit") == 900
    with pytest.raises(KeyError, match="XL430-W250.*no control table field 'Current_Limit'"):
        bus.write_field(1, "Current_Limit", 900)


def test_eeprom_write_with_torque_on_says_how_to_fix(bus: DynamixelBus) -> None:
    bus.set_torque(True)
    with pytest.raises(BusError, match=r"Operating_Mode=4 to servo ID 4 \(XL330-M288\).*set_torque\(False\)"):
        bus.write_field(4, "Operating_Mode", 4)


def test_missing_port_is_named(tmp_path: Path, arm: ArmConfig) -> None:
    missing = tmp_path / "ttyKochFollower"
    with pytest.raises(BusError, match=f"{missing} does not exist"):
        DynamixelBus(str(missing), arm.baudrate, arm.ids).open()
    missing.symlink_to(tmp_path / "gone")
    with pytest.raises(BusError, match="dangling symlink"):
        DynamixelBus(str(missing), arm.baudrate, arm.ids).open()


def test_non_serial_file_is_named(tmp_path: Path, arm: ArmConfig) -> None:
    not_a_tty = tmp_path / "notes.txt"
    not_a_tty.write_text("not a serial port")
    with pytest.raises(BusError, match=f"{not_a_tty} is not a serial device"):
        DynamixelBus(str(not_a_tty), arm.baudrate, arm.ids).open()


def test_unsupported_baud_rate_is_named(emulator: DynamixelBusEmulator, arm: ArmConfig) -> None:
    with pytest.raises(BusError, match=f"baud rate 12345 cannot be set on {emulator.port}"):
        DynamixelBus(emulator.port, 12345, arm.ids).open()


def test_missing_servo_id_is_named(emulator: DynamixelBusEmulator, arm: ArmConfig) -> None:
    ids = [*arm.ids, 7]
    with DynamixelBus(emulator.port, arm.baudrate, ids, {7: "xl330-m288"}, attempts=2) as bus:
        message = rf"servo ID 7 \(expected XL330-M288\) does not answer.*{emulator.port}"
        with pytest.raises(BusError, match=message):
            bus.ping_all()
        with pytest.raises(BusError, match=r"failed 2 times.*ID 7"):
            bus.read_state()


def test_wrong_model_is_named(emulator: DynamixelBusEmulator, arm: ArmConfig) -> None:
    expected = {j.id: j.model for j in arm.joints} | {3: "xl430-w250"}
    with (
        DynamixelBus(emulator.port, arm.baudrate, arm.ids, expected) as bus,
        pytest.raises(BusError, match=r"servo ID 3 .* is a XL330-M288 .* expects XL430-W250"),
    ):
        bus.ping_all()


def test_goal_array_must_match_ids(bus: DynamixelBus) -> None:
    with pytest.raises(ValueError, match="expected 6 goal positions"):
        bus.write_goal_positions(np.zeros(5, dtype=np.int64))
