"""The shared safety layer: nothing outside the limits leaves it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits

KOCH = load_koch()
ARM = KOCH.follower
DT = 1.0 / 30.0

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.floats(-4, 4))


@settings(max_examples=300, deadline=None)
@given(chunk=arrays(np.float64, st.tuples(st.integers(1, 20), st.just(6)), elements=values),
       measured=arrays(np.float64, 6, elements=st.floats(-1.4, 1.4)))
def test_filtered_chunks_stay_inside_position_velocity_and_step_limits(chunk: np.ndarray,
                                                                        measured: np.ndarray) -> None:
    limits = SafetyLimits.for_arm(ARM, KOCH.safety)
    safe = limits.filter_chunk(chunk, measured, DT)
    assert safe.shape == chunk.shape
    assert np.all(np.isfinite(safe))
    assert np.all(safe >= limits.lower - 1e-12) and np.all(safe <= limits.upper + 1e-12)
    start = np.clip(measured, limits.lower, limits.upper)
    assert np.all(np.abs(safe[0] - start) <= limits.max_step + 1e-12)
    assert np.all(np.abs(np.diff(safe, axis=0)) <= limits.max_velocity * DT + 1e-12)


def test_interventions_are_counted_by_kind() -> None:
    limits = SafetyLimits.for_arm(ARM, KOCH.safety)
    limits.filter_chunk(np.array([[np.nan, 0, 0, 0, 0, 0], [9.0, 0, 0, 0, 0, 0]]), np.zeros(6), DT)
    assert limits.interventions["non_finite"] == 1
    assert limits.interventions["position_limit"] == 1
    assert limits.interventions["velocity_limit"] == 1


def test_safe_chunk_is_untouched() -> None:
    limits = SafetyLimits.for_arm(ARM, KOCH.safety)
    chunk = np.linspace(0, 0.05, 5)[:, None] * np.ones((1, 6))
    np.testing.assert_allclose(limits.filter_chunk(chunk, np.zeros(6), DT), chunk)
    assert not limits.interventions


def test_rate_limit_moves_no_faster_than_max_velocity() -> None:
    limits = SafetyLimits.for_arm(ARM, KOCH.safety)
    goal = limits.limit_rate(np.zeros(6), np.ones(6), 0.02)
    np.testing.assert_allclose(goal, ARM.max_velocity * 0.02)
