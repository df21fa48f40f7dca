"""The policy node's safety gate (ROS-free): latching e-stop and deadman heartbeat.

The e-stop latches on the first request (topic or service) and stays latched until an
explicit reset; while latched the runner commands the position measured when it latched.
The deadman (optional, `deadman_timeout_s` > 0) must be refreshed by a heartbeat more often
than its timeout; when it lapses the runner holds the measured position until heartbeats
return (it is a hold-to-run switch, not a latch).
"""

from __future__ import annotations

import threading

import numpy as np

from koch_common.enums import StrEnum


class GateState(StrEnum):
    """Whether commands may flow; the value is the policy node's `gate` diagnostic."""

    OPEN = "open"
    ESTOP = "estop"  # latched until reset_estop
    DEADMAN = "deadman"  # no heartbeat within deadman_timeout_s


class SafetyGate:
    def __init__(self, deadman_timeout_s: float = 0.0) -> None:
        if deadman_timeout_s < 0:
            raise ValueError(f"deadman_timeout_s must be >= 0 (0 disables the deadman), got {deadman_timeout_s}")
        self.deadman_timeout_s = deadman_timeout_s
        self._lock = threading.Lock()
        self.estop_latched = False
        self.hold_position: np.ndarray | None = None
        self._last_heartbeat: float | None = None

    def estop(self) -> bool:
        """Latch the e-stop; returns False when it was already latched."""
        with self._lock:
            if self.estop_latched:
                return False
            self.estop_latched = True
            self.hold_position = None  # taken by the runner on its next tick
            return True

    def reset_estop(self) -> bool:
        with self._lock:
            was = self.estop_latched
            self.estop_latched = False
            self.hold_position = None
            return was

    def heartbeat(self, now: float) -> None:
        with self._lock:
            self._last_heartbeat = now

    def state(self, now: float) -> GateState:
        """OPEN when commands may flow; else what stops them (a latched e-stop first)."""
        with self._lock:
            if self.estop_latched:
                return GateState.ESTOP
            if self.deadman_timeout_s > 0 and (
                    self._last_heartbeat is None or now - self._last_heartbeat > self.deadman_timeout_s):
                return GateState.DEADMAN
            return GateState.OPEN

    def latched_hold(self, measured: np.ndarray) -> np.ndarray:
        """The position the e-stop holds: the one measured on the first tick after latching."""
        with self._lock:
            if self.hold_position is None:
                self.hold_position = np.array(measured, dtype=np.float64)
            return self.hold_position
