"""Calibrate a Koch arm: homing offset and range of motion per joint, into YAML.

    calibrate --arm follower [--port /dev/ttyKochFollower] [--output calibration/follower.yaml]
    ros2 run koch_driver calibrate --arm leader

1. Torque goes off on every servo; place the arm in the zero pose of config/koch.yaml
   (upper arm vertical, forearm horizontal, gripper pointing down, gripper closed) and press
   Enter: the present position of each joint becomes its zero (`zero_raw`), stored with the
   equivalent Dynamixel `homing_offset` (2048 - zero_raw: the value that would put the zero
   pose at the servo's centre tick).
2. Move every joint through its full range, then press Enter: the smallest and largest raw
   positions seen (`range_min`, `range_max`) are stored too.

Point the arm at the file with `calibration: calibration/<arm>.yaml` in config/koch.yaml (or
the override `follower.calibration=...`): `load_koch` then takes each joint's zero from it and
narrows its limits to the recorded range, so every raw <-> radian conversion uses it.
`--yes --duration S` runs both steps without prompts (zero = the pose at start, range =
recorded for S seconds), for scripted set-ups and the tests.

It reads koch.yaml without applying the arm's current calibration: a broken or incomplete
calibration file (whose error says to run `calibrate` again) must not stop the tool that rewrites it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from koch_common.config import ConfigError, config_dir, load_config
from koch_common.robot import ArmConfig, KochConfig
from koch_driver.bus import BusError, DynamixelBus

CENTER_TICK = 2048


def record_calibration(bus: DynamixelBus, arm: ArmConfig, wait_zero, wait_range) -> dict:
    """Run both steps on an open bus; `wait_*` block until the person (or the script) is ready."""
    bus.ping_all()
    bus.set_torque(False)
    wait_zero()
    zero, _, _ = bus.read_state()
    low, high = zero.copy(), zero.copy()
    done = threading.Event()

    def wait_then_signal() -> None:
        wait_range()
        done.set()

    waiter = threading.Thread(target=wait_then_signal, daemon=True)
    waiter.start()
    while not done.is_set():
        position, _, _ = bus.read_state()
        low, high = np.minimum(low, position), np.maximum(high, position)
        time.sleep(0.01)
    joints = {}
    for index, joint in enumerate(arm.joints):
        joints[joint.name] = {
            "id": joint.id,
            "zero_raw": int(zero[index]),
            "homing_offset": int(CENTER_TICK - zero[index]),
            "range_min": int(low[index]),
            "range_max": int(high[index]),
        }
    return {"port": arm.port, "joints": joints}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", choices=("follower", "leader"), default="follower")
    parser.add_argument("--port", default=None, help="serial port (default: the arm's port in koch.yaml)")
    parser.add_argument("--baudrate", type=int, default=None)
    parser.add_argument("--output", default=None,
                        help="YAML to write, relative to config/ or absolute (default calibration/<arm>.yaml)")
    parser.add_argument("--yes", action="store_true", help="no prompts: zero = pose now, range over --duration")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of range recording with --yes")
    args, _ros_args = parser.parse_known_args(argv)

    try:
        configured: ArmConfig = getattr(load_config(KochConfig, "koch.yaml"), args.arm)  # ids, port: not calibrated
    except ConfigError as err:
        print(f"calibrate: {err}", file=sys.stderr)
        return 1
    arm = dataclasses.replace(configured, port=args.port or configured.port,
                              baudrate=args.baudrate or configured.baudrate)
    output = Path(args.output or f"calibration/{args.arm}.yaml")
    if not output.is_absolute():
        output = config_dir() / output

    def prompt(text: str):
        if args.yes:
            return lambda: None
        return lambda: input(text)

    wait_range = (lambda: time.sleep(args.duration)) if args.yes else prompt(
        "Move every joint through its full range, then press Enter. ")
    try:
        with DynamixelBus(arm.port, arm.baudrate, arm.ids, {j.id: j.model for j in arm.joints}) as bus:
            result = record_calibration(
                bus, arm, prompt(f"Torque is off. Put the {args.arm} arm in the zero pose and press Enter. "),
                wait_range)
    except BusError as err:
        print(f"calibrate: {err}", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    header = f"# {args.arm} arm calibration written by `calibrate` (koch_driver); raw ticks.\n"
    output.write_text(header + yaml.safe_dump({"arm": args.arm, **result}, sort_keys=False))
    print(f"calibrate: wrote {output}")
    for name, joint in result["joints"].items():
        print(f"  {name:14s} zero_raw {joint['zero_raw']:6d}  homing_offset {joint['homing_offset']:6d}  "
              f"range [{joint['range_min']}, {joint['range_max']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
