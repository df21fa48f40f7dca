"""Where a chunk's time goes, from the camera's shutter to the goal on the servo bus (ROS-free).

Every point is a time in seconds on one clock, the system clock every node stamps with (the camera's
capture stamp is `header.stamp`, taken on it). A chunk is known along the path by the
`header.stamp` of the first JointTrajectory that carried it (`chunk_ns`): the policy node writes
the points up to the publish, the driver the receipt and the first bus write of every message it
is sent, and `join` puts the two halves together.

Each node keeps a rolling window of its own stages for `/diagnostics` (`StageWindow`) and may write
every record to a JSON-lines file (`TraceLog`), so a run can be budgeted afterwards
(`benchmarks/bench_live.py`) without a per-message print on the live path.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from koch_common.enums import StrEnum


class TracePoint(StrEnum):
    """The points on the live path, in the order a chunk passes them."""

    CAPTURE = "capture"                # the observation's newest camera frame was taken (its header stamp)
    ARRIVAL = "arrival"                # that frame reached the policy node's subscription callback
    INFERENCE_START = "inference_start"
    INFERENCE_END = "inference_end"    # the chunk checked and queued
    PUBLISHED = "published"            # the first action_chunk message carrying it handed to DDS
    DRIVER_RECEIPT = "driver_receipt"  # the driver's subscription callback got that message
    BUS_WRITE = "bus_write"            # the first goal write on the bus sampled from it returned


POLICY_POINTS = (TracePoint.CAPTURE, TracePoint.ARRIVAL, TracePoint.INFERENCE_START, TracePoint.INFERENCE_END,
                 TracePoint.PUBLISHED)
DRIVER_POINTS = (TracePoint.DRIVER_RECEIPT, TracePoint.BUS_WRITE)


@dataclass(frozen=True)
class Stage:
    name: str
    start: TracePoint
    end: TracePoint


STAGES = (
    Stage("capture_to_arrival", TracePoint.CAPTURE, TracePoint.ARRIVAL),
    Stage("arrival_to_inference", TracePoint.ARRIVAL, TracePoint.INFERENCE_START),
    Stage("inference", TracePoint.INFERENCE_START, TracePoint.INFERENCE_END),
    Stage("chunk_to_published", TracePoint.INFERENCE_END, TracePoint.PUBLISHED),
    Stage("published_to_driver", TracePoint.PUBLISHED, TracePoint.DRIVER_RECEIPT),
    Stage("driver_to_bus_write", TracePoint.DRIVER_RECEIPT, TracePoint.BUS_WRITE),
    Stage("end_to_end", TracePoint.CAPTURE, TracePoint.BUS_WRITE),
)
POLICY_STAGES = tuple(s for s in STAGES if s.start in POLICY_POINTS and s.end in POLICY_POINTS)
DRIVER_STAGES = tuple(s for s in STAGES if s.start in DRIVER_POINTS and s.end in DRIVER_POINTS)


@dataclass
class ChunkTrace:
    """One chunk's points (seconds; None: not reached, or this half of the path is another node's)."""

    chunk_ns: int = 0
    capture: float | None = None
    arrival: float | None = None
    inference_start: float | None = None
    inference_end: float | None = None
    published: float | None = None
    driver_receipt: float | None = None
    bus_write: float | None = None

    def at(self, point: TracePoint) -> float | None:
        value: float | None = getattr(self, point.value)
        return value

    def duration(self, stage: Stage) -> float | None:
        start, end = self.at(stage.start), self.at(stage.end)
        return None if start is None or end is None else end - start

    def out_of_order(self) -> list[str]:
        """Each pair of consecutive points present that runs backwards (empty: monotonic along the path)."""
        present = [(p, t) for p in TracePoint if (t := self.at(p)) is not None]
        return [f"{a.value} {ta:.6f} > {b.value} {tb:.6f}" for (a, ta), (b, tb) in zip(present, present[1:])
                if tb < ta]

    def complete(self) -> bool:
        return all(self.at(p) is not None for p in TracePoint)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, line: str) -> ChunkTrace:
        data = json.loads(line)
        return cls(**{k: data.get(k) for k in ("chunk_ns", *(p.value for p in TracePoint))})


def percentiles_ms(values_s: Iterable[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds; NaN for none."""
    array = np.fromiter(values_s, dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    p50, p99 = np.percentile(array * 1e3, [50, 99])
    return float(p50), float(p99)


class StageWindow:
    """The latest `size` durations of each of `stages`, as p50/p99 for /diagnostics."""

    def __init__(self, stages: Iterable[Stage], size: int = 300) -> None:
        self.stages = tuple(stages)
        self._durations: dict[str, deque[float]] = {s.name: deque(maxlen=size) for s in self.stages}
        self.count = 0

    def add(self, trace: ChunkTrace) -> None:
        self.count += 1
        for stage in self.stages:
            duration = trace.duration(stage)
            if duration is not None:
                self._durations[stage.name].append(duration)

    def diagnostics(self) -> dict[str, str]:
        """{"<stage>_p50_ms": ..., "<stage>_p99_ms": ...} for every stage, "nan" before the first."""
        values = {}
        for stage in self.stages:
            p50, p99 = percentiles_ms(self._durations[stage.name])
            values[f"{stage.name}_p50_ms"] = f"{p50:.2f}"
            values[f"{stage.name}_p99_ms"] = f"{p99:.2f}"
        return values


class TraceLog:
    """Appends one JSON line per ChunkTrace to `path`; each line is written whole and flushed once a second's
    worth has gathered, so a killed process leaves every earlier line readable."""

    def __init__(self, path: Path | str, flush_every: int = 30) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._flush_every = flush_every
        self._unflushed = 0

    def write(self, trace: ChunkTrace) -> None:
        if self._file is None:
            return
        self._file.write(trace.to_json() + "\n")
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self._file.flush()
            self._unflushed = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_traces(path: Path | str) -> list[ChunkTrace]:
    """Every whole line of a TraceLog (a line cut short by a kill is skipped)."""
    traces = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            traces.append(ChunkTrace.from_json(line))
        except (json.JSONDecodeError, TypeError):
            continue
    return traces


def join(policy: Iterable[ChunkTrace], driver: Iterable[ChunkTrace]) -> list[ChunkTrace]:
    """The policy node's chunks, each with the driver's receipt and bus write of the message that first
    carried it (matched by `chunk_ns`); a chunk the driver never wrote keeps those None."""
    received: dict[int, ChunkTrace] = {}
    for trace in driver:
        received.setdefault(trace.chunk_ns, trace)  # the first receipt of a stamp
    joined = []
    for trace in policy:
        other = received.get(trace.chunk_ns)
        if other is not None:
            trace = ChunkTrace(**{**asdict(trace), **{p.value: other.at(p) for p in DRIVER_POINTS}})
        joined.append(trace)
    return joined


# The trace logs of one deploy graph, in its `trace_dir` (koch_bringup.graph.deploy).
POLICY_TRACE_FILE = "policy_trace.jsonl"
DRIVER_TRACE_FILE = "driver_trace.jsonl"


def read_run(trace_dir: Path | str) -> list[ChunkTrace]:
    """The joined traces of a deploy graph that ran with `trace_dir` (empty where nothing was traced)."""
    folder = Path(trace_dir)
    policy, driver = folder / POLICY_TRACE_FILE, folder / DRIVER_TRACE_FILE
    if not policy.is_file():
        return []
    return join(read_traces(policy), read_traces(driver) if driver.is_file() else [])


def budget(traces: Iterable[ChunkTrace]) -> dict[str, dict[str, Any]]:
    """Per stage: p50/p99 (ms) and how many chunks reached both of its points."""
    traces = list(traces)
    table: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        durations = [d for t in traces if (d := t.duration(stage)) is not None]
        p50, p99 = percentiles_ms(durations)
        table[stage.name] = {"p50_ms": p50, "p99_ms": p99, "n": len(durations)}
    return table


def format_budget(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [f"{'stage':<24}{'p50 ms':>9}{'p99 ms':>9}{'chunks':>8}"]
    for name, row in table.items():
        lines.append(f"{name:<24}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['n']:>8d}")
    return lines
