"""The trace points of the live path: joining the policy node's and the driver's halves, and the budget."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from koch_common.latency_trace import (
    DRIVER_TRACE_FILE,
    POLICY_STAGES,
    POLICY_TRACE_FILE,
    ChunkTrace,
    StageWindow,
    TraceLog,
    TracePoint,
    budget,
    read_run,
    read_traces,
)


def _policy_half(chunk_ns: int, t: float) -> ChunkTrace:
    return ChunkTrace(chunk_ns, capture=t, arrival=t + 0.002, inference_start=t + 0.003, inference_end=t + 0.013,
                      published=t + 0.014)


def test_the_two_halves_join_by_the_first_message_stamp_and_budget_every_stage(tmp_path: Path) -> None:
    policy, driver = TraceLog(tmp_path / POLICY_TRACE_FILE), TraceLog(tmp_path / DRIVER_TRACE_FILE)
    for i in range(10):
        policy.write(_policy_half(1000 + i, float(i)))
        if i != 9:  # the last chunk never reached the bus (the run ended)
            driver.write(ChunkTrace(1000 + i, driver_receipt=i + 0.015, bus_write=i + 0.025))
    driver.write(ChunkTrace(5000, driver_receipt=1.0, bus_write=1.01))  # a hold's message: no chunk of its own
    policy.close()
    driver.close()
    traces = read_run(tmp_path)
    assert len(traces) == 10 and sum(t.complete() for t in traces) == 9
    assert not any(t.out_of_order() for t in traces)
    table = budget(traces)
    assert [*table] == ["capture_to_arrival", "arrival_to_inference", "inference", "chunk_to_published",
                        "published_to_driver", "driver_to_bus_write", "end_to_end"]
    assert table["inference"]["n"] == 10 and table["end_to_end"]["n"] == 9
    assert table["inference"]["p50_ms"] == pytest.approx(10.0)
    assert table["end_to_end"]["p99_ms"] == pytest.approx(25.0)


def test_a_point_that_runs_backwards_is_named() -> None:
    trace = _policy_half(1, 10.0)
    trace.inference_end = trace.inference_start - 0.001
    assert trace.out_of_order() == [f"inference_start {10.003:.6f} > inference_end {10.002:.6f}"]
    assert [p.value for p in TracePoint][0] == "capture"


def test_a_line_cut_short_by_a_kill_is_skipped(tmp_path: Path) -> None:
    log = TraceLog(tmp_path / "t.jsonl", flush_every=1)
    log.write(_policy_half(7, 1.0))
    log.close()
    with (tmp_path / "t.jsonl").open("a") as file:
        file.write('{"chunk_ns": 8, "capt')
    assert [t.chunk_ns for t in read_traces(tmp_path / "t.jsonl")] == [7]
    assert read_run(tmp_path / "nothing") == []


def test_the_window_reports_each_stage_for_diagnostics() -> None:
    window = StageWindow(POLICY_STAGES, size=5)
    assert math.isnan(float(window.diagnostics()["inference_p50_ms"]))
    for i in range(20):
        window.add(_policy_half(i, float(i)))
    values = window.diagnostics()
    assert set(values) == {f"{s.name}_p{q}_ms" for s in POLICY_STAGES for q in (50, 99)}
    assert float(values["inference_p99_ms"]) == pytest.approx(10.0) and window.count == 20
