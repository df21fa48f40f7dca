"""The benchmarks' results log: every run appends one JSON line to benchmarks/results.jsonl.

A benchmark script ends with

    record("bus", [Figure("Fast Sync Read rate", rate, "reads/s"),
                   Figure("Fast Sync Read / wire limit", ratio, "x", Target(Comparison.AT_LEAST, 0.8))])

which appends the benchmark's name, the command line that ran it, the UTC time, the host (CPU
cores, CPU model, Python version, and `KOCH_BENCH_HOST` as a free-text label when set) and the
figures, each with its unit and, where the benchmark has one, its target. `python benchmarks/table.py`
turns the latest run of every figure into the table in benchmarks/README.md.

The log is append-only: a figure is never edited, a new run supersedes it. Figures worth comparing
over time need the same command on the same kind of machine, which is why both are in every line.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results.jsonl"
RUN_KEYS = ("benchmark", "command", "utc", "host", "figures")  # what every line of the log has
HOST_LABEL_ENV = "KOCH_BENCH_HOST"  # e.g. "2-core development VM": how the table names the machine


class Comparison(str, enum.Enum):
    AT_LEAST = ">="
    AT_MOST = "<="


@dataclass(frozen=True)
class Target:
    """What a figure must reach: `op` `value` (e.g. >= 0.8)."""

    op: Comparison
    value: float

    def met(self, measured: float) -> bool:
        return measured >= self.value if self.op is Comparison.AT_LEAST else measured <= self.value

    def __str__(self) -> str:
        return f"{self.op.value} {self.value:g}"


@dataclass(frozen=True)
class Figure:
    """One measured value of a run, with its unit ("ms", "reads/s", "x" for a ratio, "" for a count)."""

    name: str
    value: float
    unit: str
    target: Target | None = None

    def as_json(self) -> dict[str, Any]:
        if not math.isfinite(self.value):
            raise ValueError(f"figure {self.name!r} is {self.value}: a benchmark records measured numbers only")
        out: dict[str, Any] = {"name": self.name, "value": float(self.value), "unit": self.unit}
        if self.target is not None:
            out["target"] = {"op": self.target.op.value, "value": float(self.target.value)}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        target = data.get("target")
        return cls(data["name"], float(data["value"]), data["unit"],
                   Target(Comparison(target["op"]), float(target["value"])) if target else None)


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows, else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def host_info() -> dict[str, Any]:
    """The machine a run measured: its figures depend on it more than on anything else."""
    host: dict[str, Any] = {"cores": os.cpu_count(), "cpu_model": cpu_model(),
                            "python": platform.python_version(), "system": f"{platform.system()} {platform.machine()}"}
    label = os.environ.get(HOST_LABEL_ENV, "").strip()
    if label:
        host["label"] = label
    return host


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed from the repository root, e.g. `python benchmarks/bench_bus.py --quick`."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else Path("?")
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = argv[0] if argv else "?"
    return shlex.join(["python", shown, *argv[1:]])


def record(benchmark: str, figures: Sequence[Figure], *, quick: bool = False, argv: Sequence[str] | None = None,
           path: Path = RESULTS) -> dict[str, Any]:
    """Append one run's figures to the results log (one JSON line) and return what was written.

    `quick`: a shortened run (`--quick`); kept in the log, left out of the table.
    """
    if not figures:
        raise ValueError(f"{benchmark}: a run without figures is not a result")
    entry = {
        "benchmark": benchmark,
        "command": command_line(argv),
        "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": host_info(),
        "quick": quick,
        "figures": [f.as_json() for f in figures],
    }
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
    print(f"results: appended {len(figures)} figures to {path} (python benchmarks/table.py updates the table)")
    return entry


def read_results(path: Path = RESULTS) -> list[dict[str, Any]]:
    """Every run in the log, in file order; a line that is not a run is an error naming the line."""
    if not path.exists():
        return []
    runs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
            missing = [key for key in RUN_KEYS if key not in run]
            if missing:
                raise KeyError(f"missing {missing}")
            for figure in run["figures"]:
                Figure.from_json(figure)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: not a benchmark run ({err!r}); fix or remove that line") from None
        runs.append(run)
    return runs
