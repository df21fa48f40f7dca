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


def _calibration(path: Path, drop: str | None = None, joint: str = "elbow_flex") -> Path:
    joints = {j.name: {"id": j.id, "zero_raw": 2048, "homing_offset": 0, "range_min": 0, "range_max": 4095}
              for j in ARM.joints}
    if drop is not None:
        del joints[joint][drop]
    path.write_text(yaml.safe_dump({"arm": "follower", "joints": joints}))
    return path


@pytest.mark.parametrize("key", ["id", "zero_raw", "range_min", "range_max"])
def test_a_calibration_missing_a_key_names_the_file_the_key_and_the_fix(tmp_path: Path, key: str) -> None:
    """It used to surface as `KeyError: 'zero_raw'` (a traceback, or a node's one line naming neither the
    file nor what to do)."""
    broken = _calibration(tmp_path / "follower.yaml", drop=key)
    with pytest.raises(ValueError) as raised:
        load_koch("koch.yaml", [f"follower.calibration={broken}"])
    message = str(raised.value)
    assert "\n" not in message
    assert str(broken) in message and f"elbow_flex has no {key!r}" in message, message
    assert "run `calibrate --arm follower`" in message, message


def test_a_calibration_value_that_is_not_an_integer_is_named(tmp_path: Path) -> None:
    broken = _calibration(tmp_path / "follower.yaml")
    data = yaml.safe_load(broken.read_text())
    data["joints"]["shoulder_pan"]["zero_raw"] = "twelve"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=rf"{broken}: joint shoulder_pan's 'zero_raw' is 'twelve', not an integer.*"
                                         r"run `calibrate --arm follower`"):
        load_koch("koch.yaml", [f"follower.calibration={broken}"])


def test_calibrate_runs_while_the_configured_calibration_is_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """The fix the error names must work: `calibrate` reads koch.yaml without applying the file it rewrites."""
    from koch_common import robot
    from koch_common.config import config_dir

    broken = _calibration(tmp_path / "broken.yaml", drop="zero_raw")
    config = tmp_path / "config"
    config.mkdir()
    text = (config_dir() / "koch.yaml").read_text()
    (config / "koch.yaml").write_text(text.replace("follower:\n", f"follower:\n  calibration: {broken}\n", 1))
    monkeypatch.setenv("KOCH_CONFIG_DIR", str(config))
    robot._load_cached.cache_clear()  # load_koch caches by name: "koch.yaml" must be read from `config`
    servos = [(j.id, model_by_name(j.model).model_number) for j in ARM.joints]
    try:
        with DynamixelBusEmulator(servos, link_path=str(tmp_path / "follower")):
            code = calibrate(["--arm", "follower", "--port", str(tmp_path / "follower"), "--yes", "--duration",
                              "0.2", "--output", str(broken)])
    finally:
        robot._load_cached.cache_clear()  # nothing loaded from `config` outlives the test
    assert code == 0, capsys.readouterr().err
    assert yaml.safe_load(broken.read_text())["joints"]["elbow_flex"]["zero_raw"] == 2048
