"""Real-time scheduling and CPU placement for the threads that must keep a rate (ROS-free).

On Linux, a thread under SCHED_FIFO runs before every normal (SCHED_OTHER) thread that wants
its core, so model inference, video decoding or a DDS burst on the same cores cannot delay
it; threads it creates afterwards inherit the policy. It needs CAP_SYS_NICE or an rtprio
limit (`/etc/security/limits.conf`: `@robot - rtprio 99`; Docker: `--cap-add SYS_NICE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from koch_common.cpu_budget import CpuRole
from koch_common.settings import setting


@dataclass(frozen=True, kw_only=True)
class RealtimeSettings:
    """The settings of a node whose callbacks must keep a rate: its real-time priority (applied by
    `koch_common.node_runner`) and its CPUs (applied by the node before it starts threads of its own,
    `koch_common.cpu_budget.place_this_process`). `CPU_ROLE` is its share of the CPU budget."""

    CPU_ROLE: ClassVar[CpuRole] = CpuRole.CONTROL

    realtime_priority: int = setting(
        0, "SCHED_FIFO priority (1-99) of the node's callback threads (its timers among them), so work on the "
        "same cores (inference, decoding) yields to them; needs CAP_SYS_NICE or an rtprio limit (without, the "
        "node logs why and runs normally); 0: normal scheduling", minimum=0, maximum=99)
    cpus: list[int] | None = setting(
        None, "the CPUs the node's threads run on, e.g. [2, 3]; unset: the CPU budget's for the node's role "
        "(koch_common.cpu_budget: pinned only on 4 or more cores)", minimum=0)


REALTIME_PRIORITY = "realtime_priority"  # the parameter node_runner reads, RealtimeSettings' field


def make_current_thread_realtime(priority: int) -> str | None:
    """SCHED_FIFO at `priority` (1-99) for the calling thread; a message saying why not, or None."""
    if not 1 <= priority <= 99:
        return f"real-time priority {priority} is outside 1-99"
    if not hasattr(os, "sched_setscheduler"):
        return "real-time scheduling needs Linux (os.sched_setscheduler is missing)"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return (f"no permission for SCHED_FIFO priority {priority}: grant CAP_SYS_NICE (Docker: --cap-add SYS_NICE) "
                "or an rtprio limit (limits.conf: '@robot - rtprio 99'); running with normal priority")
    except OSError as err:
        return f"cannot set SCHED_FIFO priority {priority} ({err}); running with normal priority"
    return None


def pin_current_thread(cpus: frozenset[int]) -> str | None:
    """Run the calling thread on `cpus` only (other threads keep theirs); a message saying why not, or None."""
    if not hasattr(os, "sched_setaffinity"):
        return "CPU pinning needs Linux (os.sched_setaffinity is missing)"
    try:
        os.sched_setaffinity(0, cpus)  # 0: the calling thread
    except OSError as err:  # e.g. the process's CPU set no longer holds them
        return f"not pinned to CPUs {sorted(cpus)}: {err}"
    return None


class LateCycleCounter:
    """Counts the cycles of a periodic callback that started more than half a period late (a cycle
    skipped), and the longest interval between two starts: a timer's honesty, for /diagnostics."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.late = 0
        self.worst_interval_s = 0.0
        self._last: float | None = None

    def started(self, now: float) -> None:
        """Call at the start of each cycle with a monotonic time (s)."""
        if self._last is not None:
            interval = now - self._last
            self.worst_interval_s = max(self.worst_interval_s, interval)
            if interval > 1.5 * self.period_s:
                self.late += 1
        self._last = now
