"""The `calibrate` CLI against the emulated follower, and its use by the raw <-> radian mapping."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from koch_common.dynamixel_models import model_by_name
from koch_common.robot import load_koch
from koch_driver.calibrate import main as calibrate
from koch_sim.dxl_emulator import DynamixelBusEmulator

ARM = load_koch().follower
ZERO = {1: 2100, 2: 1990, 3: 2048, 4: 2300, 5: 1800, 6: 2000}  # the arm's zero pose, as assembled


def test_calibrate_records_zero_and_range_and_the_mapping_uses_them(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    servos = [(j.id, model_by_name(j.model).model_number) for j in ARM.joints]
    link, output = tmp_path / "follower", tmp_path / "follower_cal.yaml"
    with DynamixelBusEmulator(servos, link_path=str(link), initial_positions=ZERO) as emulator:
        emulator.write_field(1, "Torque_Enable", 1)  # calibration must turn torque off to move by hand

        def sweep() -> None:  # the person moving every joint through its range
            time.sleep(0.3)
            for servo_id, zero in ZERO.items():
                for raw in (zero - 600, zero + 700, zero):
                    emulator.set_present_position(servo_id, raw)
                    time.sleep(0.15)  # several sampling periods, also on a loaded CI host

        mover = threading.Thread(target=sweep)
        mover.start()
        code = calibrate(["--arm", "follower", "--port", str(link), "--yes", "--duration", "4.0",
                          "--output", str(output)])
        mover.join()
        assert emulator.read_field(1, "Torque_Enable") == 0
    assert code == 0, capsys.readouterr().err
    data = yaml.safe_load(output.read_text())
    for joint in ARM.joints:
        entry = data["joints"][joint.name]
        assert entry["zero_raw"] == ZERO[joint.id]
        assert entry["homing_offset"] == 2048 - ZERO[joint.id]
        assert (entry["range_min"], entry["range_max"]) == (ZERO[joint.id] - 600, ZERO[joint.id] + 700)

    calibrated = load_koch("koch.yaml", [f"follower.calibration={output}"]).follower
    raw_zero = np.array([ZERO[i] for i in ARM.ids])
    np.testing.assert_allclose(calibrated.from_raw(raw_zero), 0.0)
    np.testing.assert_array_equal(calibrated.to_raw(np.zeros(6)), raw_zero)
    # 600 ticks below zero = -0.92 rad narrows every lower limit that was wider than that.
    np.testing.assert_allclose(calibrated.lower, np.maximum(ARM.lower, -600 * 2 * np.pi / 4096))
    np.testing.assert_allclose(calibrated.upper, np.minimum(ARM.upper, 700 * 2 * np.pi / 4096))


def test_calibrate_names_a_missing_port(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "ttyKochLeader"
    assert calibrate(["--arm", "leader", "--port", str(missing), "--yes", "--output", str(tmp_path / "x.yaml")]) == 1
    assert f"serial port {missing} does not exist" in capsys.readouterr().err


def test_calibration_for_other_ids_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    joints = {j.name: {"id": j.id + 10, "zero_raw": 2048, "range_min": 0, "range_max": 4095} for j in ARM.joints}
    bad.write_text(yaml.safe_dump({"joints": joints}))
    with pytest.raises(ValueError, match="shoulder_pan was recorded on servo ID 11 but koch.yaml says ID 1"):
        load_koch("koch.yaml", [f"follower.calibration={bad}"])
