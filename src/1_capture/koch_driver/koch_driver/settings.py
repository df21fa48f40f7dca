"""The driver and teleop nodes' parameters, declared once (ROS-free): defaults, descriptions, constraints.

The bus settings of an arm live in koch.yaml; the driver's parameters of the same names are unset
by default and override koch.yaml's value when given (see koch_common.settings for the rule).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from koch_common.config import ConfigError
from koch_common.realtime import RealtimeSettings
from koch_common.robot import ArmConfig
from koch_common.settings import setting

ARMS = ("follower", "leader")


@dataclass(frozen=True, kw_only=True)
class DriverSettings(RealtimeSettings):
    realtime_priority: int = setting(
        50, "SCHED_FIFO priority (1-99) of the control loop (read, limit, write), above every normal thread; "
        "needs CAP_SYS_NICE or an rtprio limit (without, the node logs why and runs normally); 0: normal "
        "scheduling", minimum=0, maximum=99)
    arm: str = setting("follower", "which arm of koch.yaml this driver runs (its joints, port and limits)",
                       choices=ARMS)
    port: str | None = setting(
        None, "serial port of the arm's bus adapter (/dev/ttyACM0, a /dev/serial/by-id/ path, the sim's pty link); "
        "unset: koch.yaml's <arm>.port")
    baudrate: int | None = setting(None, "bus baud rate; unset: koch.yaml's <arm>.baudrate", minimum=9600)
    error_timeout_s: float | None = setting(
        None, "bus errors for this long in a row mean the bus is lost (hold, then reconnect); "
        "unset: koch.yaml's <arm>.error_timeout_s")
    fast_sync_read: bool | None = setting(
        None, "use Fast Sync Read where every servo's firmware has it; unset: koch.yaml's <arm>.fast_sync_read")
    control_rate_hz: float | None = setting(
        None, "rate of the read-command loop and of joint_states (Hz); unset: koch.yaml's <arm>.control_rate_hz")
    torque_enable: bool = setting(
        True, "master switch of the servos' torque at start-up (which joints get torque is per joint in koch.yaml: "
        "the leader's gripper only); at run time use the ~/torque service")
    connect_timeout_s: float = setting(
        10.0, "how long to wait for the bus and every servo at start-up before giving up", minimum=0.0)
    diagnostics_period_s: float = setting(1.0, "period of the /diagnostics messages (s)")
    trace_log: str = setting(
        "", "a JSON-lines file for each joint_commands message's receipt and first goal write on the bus "
        "(koch_common.latency_trace); empty: none (their latency is on /diagnostics either way)")

    def validate(self) -> DriverSettings:
        for name in ("error_timeout_s", "control_rate_hz", "diagnostics_period_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"parameter {name}={value} must be positive")
        return self

    def apply_to(self, arm: ArmConfig) -> ArmConfig:
        """`arm` (koch.yaml's) with the bus settings given as parameters; a copy, the loaded config is shared."""
        given = {name: getattr(self, name) for name in ("port", "baudrate", "error_timeout_s", "fast_sync_read",
                                                        "control_rate_hz")}
        return dataclasses.replace(arm, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True, kw_only=True)
class TeleopSettings:
    """Teleop takes both arms and the limits from koch.yaml: it has no parameters of its own.

    Declared all the same, so it is documented like every other node and `koch_bringup.graph`
    refuses to pass it a parameter it would ignore.
    """
