"""How the deploy graph shares the robot computer's cores (ROS-free).

On a small computer every node of the graph (simulator or servos' driver, cameras, policy) runs on
the same few cores, and each numerical library starts a thread per core of its own: torch,
onnxruntime, OpenCV, OpenBLAS, ffmpeg. Together they ask for several times the cores there are, and
a pool that waits for its slowest thread (an intra-op forward) waits for whichever thread the
scheduler put last. The budget gives each node a share:

- every node but the policy: one thread per library (`LIBRARY_THREAD_VARIABLES`, set in its
  environment by the launcher and the launch files; OpenCV and torch also in-process);
- the policy node's inference: the cores less one for the rest of the graph (at least one), capped
  at `MAX_INFERENCE_THREADS`;
- with `PINNING_MIN_CORES` or more, the control path (the driver's loop, the simulator) on the first
  core and the policy node on the others, so inference never takes the control loop's core; with
  fewer there is nothing to spare and nothing is pinned;
- the driver's control loop under SCHED_FIFO where the OS permits it (its `realtime_priority`;
  `koch_common.realtime` logs why not where not). The policy node's callbacks stay at normal priority
  unless asked: under SCHED_FIFO, rclpy's multi-threaded executor loop takes the CPU its inference
  worker needs on a small machine.

Each value is a node parameter (`cpus`, `inference_threads`, `realtime_priority`) whose unset or 0
default means "the budget's"; a launch argument or parameter file overrides it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from koch_common.enums import StrEnum

# The variables the BLAS/OpenMP runtimes read once, at import: set before the process starts.
LIBRARY_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
PINNING_MIN_CORES = 4
MAX_INFERENCE_THREADS = 8


class CpuRole(StrEnum):
    """What a node does for the budget."""

    CONTROL = "control"      # keeps the arm's rate: the driver's loop, the simulated servos
    INFERENCE = "inference"  # the policy node: as many threads as the budget spares
    SUPPORT = "support"      # cameras, robot_state_publisher, recorder, tools: one thread per library


@dataclass(frozen=True)
class CpuBudget:
    cpus: tuple[int, ...]  # the CPUs the graph may use (this process's affinity)

    @classmethod
    def for_this_machine(cls) -> CpuBudget:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        return cls(tuple(cpus))

    @property
    def pinned(self) -> bool:
        return len(self.cpus) >= PINNING_MIN_CORES

    @property
    def inference_threads(self) -> int:
        return max(1, min(len(self.cpus) - 1, MAX_INFERENCE_THREADS))

    def threads(self, role: CpuRole) -> int:
        return self.inference_threads if role is CpuRole.INFERENCE else 1

    def cpus_for(self, role: CpuRole) -> tuple[int, ...] | None:
        """The CPUs a node of `role` is pinned to; None: not pinned (too few cores, or a support node)."""
        if not self.pinned or role is CpuRole.SUPPORT:
            return None
        return self.cpus[:1] if role is CpuRole.CONTROL else self.cpus[1:]

    def environment(self, role: CpuRole) -> dict[str, str]:
        """The library thread variables for a node of `role`, for its process's environment."""
        return {name: str(self.threads(role)) for name in LIBRARY_THREAD_VARIABLES}

    def describe(self) -> str:
        placement = (f"control path on CPU {self.cpus[0]}, policy on CPUs {list(self.cpus[1:])}" if self.pinned
                     else f"nothing pinned (fewer than {PINNING_MIN_CORES} cores)")
        return (f"{len(self.cpus)} CPUs: inference {self.inference_threads} thread(s), other nodes 1 per library; "
                f"{placement}")


def place_this_process(role: CpuRole, cpus: list[int] | None, threads: int) -> str:
    """At a node's start, before it starts threads of its own: pin the calling thread to `cpus` (None: the
    budget's for `role`; threads created later inherit it) and cap the thread pools of the libraries
    already imported (OpenCV, torch) at `threads` (0: the budget's). Returns what it did, for the log."""
    budget = CpuBudget.for_this_machine()
    wanted = tuple(cpus) if cpus else budget.cpus_for(role)
    count = threads or budget.threads(role)
    done = []
    if wanted is not None:
        from koch_common.realtime import pin_current_thread  # realtime imports CpuRole from here

        problem = pin_current_thread(frozenset(wanted))
        done.append(problem or f"pinned to CPUs {list(wanted)}")
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    done.append(f"{count} thread(s) per library")
    return f"CPU budget ({role}): " + ", ".join(done)
