"""SCHED_FIFO for control threads: granted where the process may, a clear message where not."""

from __future__ import annotations

import os
import threading

from koch_common.realtime import make_current_thread_realtime


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
