"""The fault drill at test size: every fault kind once, injected into the running simulated graph
while an untrained ACT drives the arm (koch_bringup.fault_drill; the 30-minute soak is
benchmarks/bench_fault_soak.py).

What must hold whatever the host's speed: no goal the servos received left koch.yaml's position,
velocity or acceleration bounds; no node or driver died untold; every fault that takes the policy's
inputs or model away (or e-stops it) made it hold; motion came back after every fault.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from koch_bringup.fault_drill import HOLDS, FaultKind, run_drill

pytestmark = [pytest.mark.dds, pytest.mark.training]


def test_every_fault_once_keeps_every_goal_inside_the_bounds(tmp_path: Path) -> None:
    # Faults of 2-3 s: a holding fault must show its hold even where the host stalls the node for a second.
    report = run_drill(tmp_path, list(FaultKind), duration_s=None, seed=3, fault_s=(2.0, 3.0))
    summary = "\n".join(report.lines())
    assert report.by_kind() == {kind.value: 1 for kind in FaultKind}, summary
    assert report.goals is not None and report.goals.goals > 1000, summary
    assert report.goals.outside_any_bound == 0, summary
    assert report.crashes == [], summary
    assert report.missing_holds == [], summary
    assert report.not_resumed == [], summary
    held = {event.kind for event in report.events if event.hold_ticks is not None}
    assert held >= HOLDS, summary
    assert (tmp_path / "fault_drill.json").is_file() and (tmp_path / "goals.csv").is_file()
