"""The rollout report's statistics and the results table made from published reports (no ROS)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from koch_bringup.rollout import EpisodeRecord, RolloutReport, parse_parameter, wilson_interval

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import table  # noqa: E402


@pytest.mark.parametrize(("successes", "n", "low", "high"),
                         [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634),
                          (48, 50, 0.8654, 0.9890)])
def test_the_wilson_interval_matches_its_closed_form_values(successes: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-4)


def _report(successes: list[bool]) -> RolloutReport:
    report = RolloutReport("ckpt", "pick_taller", "the taller block lifted", "lift", "rgbd_diffusion", "onnx", "cpu",
                           1001, training={"steps": 4000, "train_episodes": 100, "train_wall_s": 3600.0,
                                           "device": "cpu", "inputs": ["observation.state", "observation.images.head",
                                                                       "observation.images.head_depth"]},
                           latency_p50_ms=41.0, latency_p99_ms=90.0, utc="2026-12-03T20:00:00+00:00",
                           command="rollout --checkpoint ckpt --task pick_taller")
    for i, success in enumerate(successes):
        report.episodes.append(EpisodeRecord(1001 + i, "pick up the taller block", success, 1.5 if success else None,
                                             0.0, 0.04 if success else 0.0, "", False,
                                             {"driver.max_step": 2} if i == 0 else {}, goal="block_b",
                                             chosen=[None, "block_a", "block_b"][i % 3]))
    return report


def test_the_report_counts_successes_and_interventions_and_the_table_shows_them(tmp_path: Path) -> None:
    report = _report([True, True, False, True])
    saved = json.loads(json.dumps(report.to_dict()))
    assert saved["successes"] == 3 and saved["success_rate"] == 0.75
    assert saved["interventions"] == {"driver.max_step": 2}
    assert saved["goal_chosen"] == 1 and report.choice_counts == (1, 2)
    assert saved["success_ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    (tmp_path / "rgbd-pick_taller.json").write_text(json.dumps(saved))
    rows, runs = table.rollout_rows(table.read_rollouts(tmp_path))
    assert ("| rgbd_diffusion | state, head, head_depth | pick_taller | 3/4 = 75% [30%, 95%]; went for the goal 1/4 "
            "| 4 | 100 "
            "| 4000 steps, 60 min | cpu | 41 / 90 ms | not traced | onnx |") in rows[2]
    assert runs[0].startswith("1. ") and "rollout --checkpoint ckpt --task pick_taller" in runs[0]


def test_policy_parameters_parse_as_json_when_they_can() -> None:
    assert parse_parameter("device=cuda") == ("device", "cuda")
    assert parse_parameter("replan_threshold=0.5") == ("replan_threshold", 0.5)
    with pytest.raises(Exception, match="NAME=VALUE"):
        parse_parameter("device")
