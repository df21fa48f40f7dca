"""The simulated leader arm: six emulated XL330-M077 moved "by hand" (ROS-free).

A real Koch leader is back-driven by a person: torque off on every joint except the
gripper, which runs in current-based position mode as a spring-loaded trigger. Here the
scripted expert plays the person: `impose()` sets the servos' present positions through the
emulator (`set_present_position`), and the leader driver reads them over the real
dynamixel_sdk like any other bus.
"""

from __future__ import annotations

import numpy as np

from koch_common.dynamixel_models import model_by_name
from koch_common.robot import ArmConfig
from koch_sim.dxl_emulator import DynamixelBusEmulator


class LeaderArmEmulator:
    def __init__(self, arm: ArmConfig, link_path: str | None = None, wire_timing: bool = False,
                 initial: np.ndarray | None = None) -> None:
        self.arm = arm
        raw = arm.to_raw(np.zeros(len(arm.joints)) if initial is None else initial)
        self.emulator = DynamixelBusEmulator(
            [(j.id, model_by_name(j.model).model_number) for j in arm.joints],
            link_path=link_path,
            initial_positions={j.id: int(r) for j, r in zip(arm.joints, raw)},
            wire_timing=wire_timing,
        )

    @property
    def port(self) -> str:
        return self.emulator.port

    def start(self) -> LeaderArmEmulator:
        self.emulator.start()
        return self

    def stop(self) -> None:
        self.emulator.stop()

    def __enter__(self) -> LeaderArmEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def impose(self, positions_rad: np.ndarray) -> None:
        """Move every joint to `positions_rad` (radians, the arm's joint order) by hand."""
        raw = self.arm.to_raw(np.asarray(positions_rad, dtype=np.float64))
        for joint, value in zip(self.arm.joints, raw, strict=True):
            self.emulator.set_present_position(joint.id, int(value))
