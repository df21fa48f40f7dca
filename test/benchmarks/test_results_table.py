"""The benchmarks' results log and the table generated from it (benchmarks/README.md)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import table  # noqa: E402
from results_log import Comparison, Figure, Target, read_results, record  # noqa: E402

RATIO = Target(Comparison.AT_LEAST, 0.8)


def _run(path: Path, rate: float, *, quick: bool = False, extra: bool = False) -> None:
    figures = [Figure("rate / wire limit", rate, "x", RATIO)]
    if extra:
        figures.append(Figure("latency p99", 1.5, "ms"))
    record("bus", figures, quick=quick, argv=[str(ROOT / "benchmarks/bench_bus.py"), *(["--quick"] if quick else [])],
           path=path)


def test_a_run_is_one_json_line_with_command_host_and_figures(tmp_path: Path) -> None:
    log = tmp_path / "results.jsonl"
    _run(log, 0.83)
    (line,) = log.read_text().splitlines()
    run = json.loads(line)
    assert run["benchmark"] == "bus" and run["command"] == "python benchmarks/bench_bus.py"
    assert run["host"]["cores"] >= 1 and run["figures"][0]["target"] == {"op": ">=", "value": 0.8}
    assert read_results(log) == [run]


def test_the_table_shows_the_latest_full_run_only_and_whether_targets_are_met(tmp_path: Path) -> None:
    log = tmp_path / "results.jsonl"
    _run(log, 0.83, extra=True)  # an older run with a figure the newer one lacks
    _run(log, 0.69)
    _run(log, 0.99, quick=True)  # quick runs stay in the log, out of the table
    page = table.render(read_results(log))
    assert "| bus | rate / wire limit | 0.69× | ≥ 0.8: **missed** |" in page
    assert "0.99" not in page and "latency p99" not in page
    assert "no full run recorded yet: `python benchmarks/bench_policy.py`" in page


def test_check_fails_on_a_stale_page_and_passes_once_written(tmp_path: Path) -> None:
    log, page = tmp_path / "results.jsonl", tmp_path / "README.md"
    _run(log, 0.83)
    args = ["--results", str(log), "--output", str(page)]
    assert table.main([*args, "--check"]) == 1
    assert table.main(args) == 0
    assert table.main([*args, "--check"]) == 0


def test_the_committed_table_is_generated_from_the_committed_log() -> None:
    assert table.main(["--check"]) == 0, "benchmarks/README.md is stale: run `python benchmarks/table.py`"


def test_unmeasured_figures_and_broken_lines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="measured numbers only"):
        record("bus", [Figure("rate", math.nan, "x")], path=tmp_path / "log.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"benchmark": "bus"}\n')
    with pytest.raises(ValueError, match="broken.jsonl:1: not a benchmark run"):
        read_results(broken)
