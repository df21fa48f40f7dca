"""Where an onnxruntime session's threads run: one physical core per thread, the caller on its own.

On the robot's small computer inference shares a few cores with the 30 Hz control loop and the DDS
threads; how the inference threads are placed decides its latency more than their count does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def physical_cores() -> list[list[int]]:
    """The CPUs this process may run on, one list per physical core (a core's hyperthreads together);
    empty where the OS has no CPU affinity API."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    cores: dict[str, list[int]] = {}
    for cpu in sorted(os.sched_getaffinity(0)):
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        core = siblings.read_text(encoding="utf-8").strip() if siblings.is_file() else str(cpu)
        cores.setdefault(core, []).append(cpu)
    return list(cores.values())


@dataclass(frozen=True)
class ThreadLayout:
    """Where an onnxruntime session's intra-op threads run: the calling thread on the first physical
    core, one pool thread on each core after it (onnxruntime's own layout for the count it picks).

    onnxruntime pins its pool only for the count it picks itself (intra_op_num_threads=0) and never
    pins the calling thread. Both matter on a small computer:
    - with an explicit count the pool floats, and after the idle gaps between a node's inferences the
      scheduler spreads it badly: the forward is markedly slower than with the pool pinned;
    - with the calling thread (the node's inference worker) floating, the scheduler now and then puts
      it on a pool thread's core; both then wait on the run queue and the forward runs at one core's
      speed, which shows in the latency tail.
    So the layout pins the pool for any count and tells the caller where to run (`caller_cpus`).
    """

    threads: int  # intra_op_num_threads; 0 leaves the count (and the pool's pinning) to onnxruntime
    pool_affinities: str | None = None  # session.intra_op_thread_affinities
    caller_cpus: frozenset[int] | None = None  # for the thread that calls run(); None: leave it floating

    @classmethod
    def for_threads(cls, threads: int) -> ThreadLayout:
        """`threads` 0: one per physical core, as onnxruntime's default. Unpinned for fewer than 2
        threads, fewer cores than threads, or no CPU affinity API."""
        cores = physical_cores()
        count = threads or len(cores)
        if count < 2 or len(cores) < count:
            return cls(threads)
        # One entry per pool thread (count - 1 of them); onnxruntime numbers processors from 1.
        pool = ";".join(",".join(str(cpu + 1) for cpu in cpus) for cpus in cores[1:count])
        return cls(count, pool, frozenset(cores[0]))
