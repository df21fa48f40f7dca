"""SCHED_FIFO for control threads: granted where the process may, a clear message where not."""

from __future__ import annotations

import os
import threading

from koch_common.cpu_budget import LIBRARY_THREAD_VARIABLES, CpuBudget, CpuRole, place_this_process
from koch_common.realtime import LateCycleCounter, make_current_thread_realtime


def _in_thread(priority: int) -> tuple[str | None, int, int]:
    out: list[tuple[str | None, int, int]] = []

    def body() -> None:
        problem = make_current_thread_realtime(priority)
        out.append((problem, os.sched_getscheduler(0), os.sched_getparam(0).sched_priority))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return out[0]


def test_fifo_is_set_for_the_calling_thread_only_or_the_refusal_says_what_to_grant() -> None:
    problem, policy, priority = _in_thread(10)
    if problem is None:
        assert (policy, priority) == (os.SCHED_FIFO, 10)
    else:
        assert "CAP_SYS_NICE" in problem and policy == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the test's own thread is untouched


def test_priority_outside_the_fifo_range_is_refused() -> None:
    problem, policy, _ = _in_thread(0)
    assert problem is not None and "1-99" in problem and policy == os.SCHED_OTHER


def test_the_cpu_budget_leaves_a_core_to_the_graph_and_pins_only_with_cores_to_spare() -> None:
    small = CpuBudget((0, 1))
    assert small.inference_threads == 1 and not small.pinned
    assert small.cpus_for(CpuRole.CONTROL) is None and small.cpus_for(CpuRole.INFERENCE) is None
    assert small.environment(CpuRole.SUPPORT) == {name: "1" for name in LIBRARY_THREAD_VARIABLES}
    large = CpuBudget(tuple(range(2, 10)))  # eight CPUs, numbered as a container's cpuset may number them
    assert large.pinned and large.inference_threads == 7
    assert large.cpus_for(CpuRole.CONTROL) == (2,) and large.cpus_for(CpuRole.INFERENCE) == tuple(range(3, 10))
    assert large.cpus_for(CpuRole.SUPPORT) is None and large.environment(CpuRole.INFERENCE)["OMP_NUM_THREADS"] == "7"
    assert "control path on CPU 2" in large.describe() and "nothing pinned" in small.describe()


def test_placing_a_node_pins_the_calling_thread_and_says_so() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    out: list[tuple[str, set[int]]] = []

    def body() -> None:
        out.append((place_this_process(CpuRole.CONTROL, cpus[-1:], 1), os.sched_getaffinity(0)))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    message, pinned = out[0]
    assert pinned == set(cpus[-1:]) and f"pinned to CPUs {cpus[-1:]}" in message and "1 thread(s)" in message
    assert sorted(os.sched_getaffinity(0)) == cpus  # the test's own thread is untouched


def test_a_cycle_more_than_half_a_period_late_is_counted_with_the_worst_interval() -> None:
    cycles = LateCycleCounter(0.02)
    for t in (0.0, 0.02, 0.041, 0.07, 0.09):  # 0.041 -> 0.07 is 1.45 periods: on time; nothing skipped
        cycles.started(t)
    assert cycles.late == 0
    cycles.started(0.121)  # 1.55 periods after the last
    assert cycles.late == 1 and abs(cycles.worst_interval_s - 0.031) < 1e-12
