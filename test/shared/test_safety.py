"""The shared safety layer: nothing outside the limits leaves it.

The property tests push more than 10^5 generated chunks through the filter: hypothesis draws
each example's ingredients (seed, length, rates of NaN / inf / out-of-range values / jumps,
measured position, initial velocity, one fully hypothesis-built chunk) and a batch of
`BATCH` chunks is built from them. The vectorised numpy reference (`safety_reference`) filters the
batch in one call, each point is checked against the limits, and the compiled filter the robot runs
must give the same points and interventions, chunk by chunk.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safety_reference import ReferenceFilter

from koch_common.robot import load_koch
from koch_common.safety import InterventionKind, SafeChunk, SafetyLimits

KOCH = load_koch()
ARM = KOCH.follower
DT = 1.0 / 30.0
BATCH = 512
EXAMPLES = 200  # 200 x 512 = 102,400 chunks
TOL = 1e-9
CHUNKS_CHECKED = [0]

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.floats(-4, 4))


def _limits() -> SafetyLimits:
    return SafetyLimits.for_arm(ARM, KOCH.safety)


def _assert_safe(limits: SafetyLimits | ReferenceFilter, safe: np.ndarray, measured: np.ndarray,
                 initial_velocity: np.ndarray | None) -> None:
    assert np.all(np.isfinite(safe)), "non-finite output"
    assert np.all(safe >= limits.lower - TOL) and np.all(safe <= limits.upper + TOL), "outside position limits"
    start = np.clip(measured, limits.lower, limits.upper)
    assert np.all(np.abs(safe[:, 0] - start) <= limits.max_step + TOL), "first point leads measured too far"
    velocity = np.diff(safe, axis=1) / DT
    assert np.all(np.abs(velocity) <= limits.max_velocity + TOL), "above velocity limit"
    acceleration = np.diff(velocity, axis=1) / DT
    assert np.all(np.abs(acceleration) <= limits.max_acceleration + 1e-6), "above acceleration limit"
    if initial_velocity is not None and safe.shape[1] > 1:
        # across chunks: from the previous command's velocity, unless that one could not brake in time
        v0 = np.broadcast_to(initial_velocity, safe[:, 0].shape)
        reference = ReferenceFilter(_limits())
        feasible = reference.feasible_initial_velocity(safe[:, 0], v0, DT) == np.clip(v0, -limits.max_velocity,
                                                                                     limits.max_velocity)
        first = np.abs(velocity[:, 0] - v0) / DT
        assert np.all(first[feasible] <= np.broadcast_to(limits.max_acceleration, first.shape)[feasible] + 1e-6)


@st.composite
def chunk_batches(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    steps = draw(st.integers(1, 40))
    rates = [draw(st.floats(0.0, 0.05)) for _ in range(3)]  # nan, +-inf, out of range (per value)
    jump_rate = draw(st.floats(0.0, 0.5))  # per chunk: a step change of up to 6 rad at a random point
    measured = draw(arrays(np.float64, 6, elements=st.floats(-3.5, 3.5)))
    with_velocity = draw(st.booleans())
    one = draw(arrays(np.float64, (steps, 6), elements=values))
    rng = np.random.default_rng(seed)
    lower, upper = ARM.lower, ARM.upper
    # smooth-ish random walks around the measured position, then corrupted
    chunks = measured + np.cumsum(rng.normal(0, 0.15, (BATCH, steps, 6)), axis=1)
    jumps = rng.random(BATCH) < jump_rate
    at = rng.integers(0, steps, BATCH)
    for b in np.flatnonzero(jumps):
        chunks[b, at[b]:] += rng.uniform(-6, 6, 6)
    u = rng.random(chunks.shape)
    chunks[u < rates[0]] = np.nan
    chunks[(u >= rates[0]) & (u < rates[0] + rates[1])] = np.inf * rng.choice([-1, 1])
    out = (u >= rates[0] + rates[1]) & (u < sum(rates))
    chunks[out] = rng.choice([-1, 1], out.sum()) * rng.uniform(2, 1e6, out.sum())
    chunks[0] = one
    chunks = np.clip(chunks, -1e300, 1e300, where=np.isfinite(chunks), out=chunks)
    measured_b = np.clip(measured + rng.normal(0, 0.05, (BATCH, 6)), lower - 0.5, upper + 0.5)
    velocity = rng.uniform(-1, 1, (BATCH, 6)) * ARM.max_velocity if with_velocity else None
    return chunks, measured_b, velocity


@settings(max_examples=EXAMPLES, deadline=None)
@given(batch=chunk_batches())
def test_generated_chunks_never_leave_position_velocity_acceleration_and_step_limits(batch) -> None:
    chunks, measured, velocity = batch
    limits = ReferenceFilter(_limits())
    safe = limits.filter_chunks(chunks, measured, DT, velocity)
    assert safe.shape == chunks.shape
    _assert_safe(limits, safe, measured, velocity)
    # the robot filters one chunk at a time (the compiled loop, safety_kernel): the same points exactly
    node = _limits()
    velocities = [None] * len(chunks) if velocity is None else velocity
    one_by_one = np.stack([node.filter_chunk(c, m, DT, v) for c, m, v in zip(chunks, measured, velocities)])
    np.testing.assert_array_equal(one_by_one, safe)
    assert node.interventions == limits.interventions
    # a chunk with a non-finite value holds the measured position (from rest: exactly; when the arm
    # is moving, it brakes towards it within the acceleration limit, checked above)
    bad = ~np.isfinite(chunks).all(axis=(1, 2))
    if velocity is None:
        held = np.clip(measured, limits.lower, limits.upper)[:, None, :]
        assert np.all(safe[bad] == np.broadcast_to(held, safe.shape)[bad])
    assert limits.interventions["non_finite"] == int(bad.sum())
    CHUNKS_CHECKED[0] += len(chunks)


def test_the_property_run_covered_at_least_1e5_chunks() -> None:
    # runs after the property test in file order; guards against a settings change shrinking the run
    if CHUNKS_CHECKED[0] == 0:
        pytest.skip("run together with the property test to count its chunks")
    assert CHUNKS_CHECKED[0] >= 100_000


@settings(max_examples=100, deadline=None)
@given(chunk=arrays(np.float64, st.tuples(st.integers(1, 20), st.just(6)), elements=values),
       measured=arrays(np.float64, 6, elements=st.floats(-1.4, 1.4)))
def test_single_chunk_api_matches_the_limits(chunk: np.ndarray, measured: np.ndarray) -> None:
    limits = _limits()
    safe = limits.filter_chunk(chunk, measured, DT)
    assert safe.shape == chunk.shape
    _assert_safe(limits, safe[None], measured[None], None)


@st.composite
def smooth_chunk_batches(draw):
    """Chunks a trained policy would send: small steps, mostly away from the limits, some not."""
    seed = draw(st.integers(0, 2**32 - 1))
    steps = draw(st.integers(2, 30))
    step_scale = draw(st.sampled_from([0.002, 0.02, 0.1]))
    rng = np.random.default_rng(seed)
    measured = rng.uniform(ARM.lower, ARM.upper, (64, 6))
    chunks = measured[:, None] + np.cumsum(rng.normal(0, step_scale, (64, steps, 6)), axis=1)
    velocity = rng.normal(0, step_scale / DT, (64, 6)) if draw(st.booleans()) else None
    if velocity is not None:  # the previous command's velocity was within the limits
        velocity = np.clip(velocity, -ARM.max_velocity, ARM.max_velocity)
    return chunks, measured, velocity


@settings(max_examples=100, deadline=None)
@given(batch=chunk_batches(), smooth=smooth_chunk_batches())
def test_one_chunk_compiled_equals_the_numpy_reference(batch, smooth) -> None:
    # one chunk at a time on both sides, smooth policy-like chunks too: the same points and counts
    for chunks, measured, velocity in (batch, smooth):
        for b in range(8):
            v0 = None if velocity is None else velocity[b]
            compiled = _limits()
            reference = ReferenceFilter(_limits())
            got = compiled.filter_chunk(chunks[b], measured[b], DT, v0)
            want = reference.filter_chunks(chunks[b][None], measured[b][None], DT,
                                           None if v0 is None else v0[None])[0]
            np.testing.assert_array_equal(got, want)
            assert compiled.interventions == reference.interventions


def test_chunk_velocities_are_central_differences() -> None:
    positions = np.cumsum(np.random.default_rng(0).normal(0, 0.01, (12, 6)), axis=0)
    chunk = SafeChunk(positions, DT)
    np.testing.assert_allclose(chunk.velocities(), np.gradient(positions, DT, axis=0), rtol=0, atol=1e-12)
    assert chunk.velocities() is chunk.velocities()
    np.testing.assert_array_equal(SafeChunk(positions[:1], 0.0).velocities(), np.zeros((1, 6)))
    # the runner asks each tick for one point's velocity (the acceleration limit across chunks)
    fresh = SafeChunk(positions, DT)
    for k in range(-1, 13):
        want = chunk.velocities()[k] if 0 <= k < 12 else np.zeros(6)
        np.testing.assert_allclose(fresh.velocity_at(k), want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(SafeChunk(positions[:1], 0.0).velocity_at(0), np.zeros(6))
    # the safety layer's chunks come with the velocities its kernel computed alongside the points
    limited = _limits().safe_chunk(positions * 40, positions[0], DT)  # limited: the points differ
    assert not np.allclose(limited.positions, positions * 40)
    np.testing.assert_allclose(limited.velocities(), np.gradient(limited.positions, DT, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(_limits().hold(positions[3]).velocities(), np.zeros((1, 6)))


FIRST_COMMANDS = """
import numpy as np
from koch_common import safety_kernel
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits

koch = load_koch()
limits = SafetyLimits.for_arm(koch.follower, koch.safety)
compiled = {kernel.__name__: len(kernel.signatures)
            for kernel in (safety_kernel.filter_one, safety_kernel.central_velocities)}
chunk = np.linspace(0.0, 0.2, 60).reshape(10, 6)
first = limits.safe_chunk(chunk, chunk[0], 1 / 30)
# the runner's next chunk starts from the last command's velocity: a row of its read-only cache
limits.safe_chunk(chunk + 0.01, chunk[1], 1 / 30, first.velocity_at(1))
first.velocities()
read_only = chunk[2].copy()
read_only.flags.writeable = False
limits.hold(read_only)
limits.safe_chunk(chunk, read_only, 1 / 30)
print({name: len(kernel.signatures) - compiled[name]
       for name, kernel in (("filter_one", safety_kernel.filter_one),
                            ("central_velocities", safety_kernel.central_velocities))})
"""


def test_the_compiled_filter_is_ready_before_the_first_command() -> None:
    """A command that compiles a kernel stalls its tick (~1 s on a fresh install, 7-10 ms from numba's cache):
    the safety layer hands the kernels one array type, read-only inputs included, compiled when it is built.
    In a process of its own, so no earlier test has compiled anything."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", FIRST_COMMANDS], capture_output=True, text=True, timeout=120,
                            check=True)
    assert result.stdout.strip() == "{'filter_one': 0, 'central_velocities': 0}", result.stdout + result.stderr


def test_interventions_are_counted_by_kind() -> None:
    limits = _limits()
    limits.filter_chunk(np.array([[np.nan, 0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0, 0]]), np.zeros(6), DT)
    assert limits.interventions["non_finite"] == 1
    limits.filter_chunk(np.array([[0.3, 0, 0, 0, 0, 0], [9.0, 0, 0, 0, 0, 0]]), np.zeros(6), DT)
    assert limits.interventions["position_limit"] == 1
    assert limits.interventions["velocity_limit"] == 1
    limits.filter_chunk(np.array([[0.5, 0, 0, 0, 0, 0]]), np.zeros(6), DT)
    assert limits.interventions["max_step"] == 1
    # 0 -> 0.09 rad/tick (2.7 rad/s, under the limit) in one step from rest: too much acceleration
    limits.filter_chunk(np.array([[0.0] * 6, [0.09, 0, 0, 0, 0, 0]]), np.zeros(6), DT, np.zeros(6))
    assert limits.interventions["acceleration_limit"] == 1


def test_non_finite_chunk_holds_the_measured_position() -> None:
    limits = _limits()
    measured = np.array([0.1, -0.2, 0.3, 0.0, 0.5, 0.2])
    chunk = np.tile(measured + 0.05, (10, 1))
    chunk[4, 2] = np.inf
    np.testing.assert_array_equal(limits.filter_chunk(chunk, measured, DT), np.tile(measured, (10, 1)))
    with pytest.raises(ValueError, match="measured position is not finite"):
        limits.filter_chunk(chunk, np.full(6, np.nan), DT)


def test_a_joint_driven_into_its_limit_brakes_within_the_acceleration_bound() -> None:
    limits = _limits()
    measured = np.array([1.2, 0, 0, 0, 0, 0])
    chunk = np.tile(measured, (30, 1))
    chunk[:, 0] = np.linspace(1.2, 5.0, 30)  # runs into the 1.58 rad limit at full speed
    safe = limits.filter_chunk(chunk, measured, DT, np.array([3.0, 0, 0, 0, 0, 0]))
    assert safe[:, 0].max() <= limits.upper[0] + TOL
    _assert_safe(limits, safe[None], measured[None], np.array([3.0, 0, 0, 0, 0, 0]))
    assert safe[-1, 0] == pytest.approx(limits.upper[0], abs=1e-3)  # it still gets there


def test_safe_chunk_is_untouched() -> None:
    limits = _limits()
    chunk = np.linspace(0, 0.05, 5)[:, None] * np.ones((1, 6))
    np.testing.assert_allclose(limits.filter_chunk(chunk, np.zeros(6), DT), chunk)
    assert not +limits.interventions


def test_next_goal_bounds_velocity_and_acceleration_and_rejects_non_finite() -> None:
    limits = _limits()
    dt, dv = 0.02, KOCH.safety.max_acceleration * 0.02
    goal = limits.next_goal(np.zeros(6), np.zeros(6), np.ones(6), dt)  # from rest: one period's acceleration
    np.testing.assert_allclose(goal, np.full(6, dv * dt))
    step = ARM.max_velocity * dt  # at full speed, a target behind: brake by a*dt per period, never reverse at once
    back = limits.next_goal(np.zeros(6), step, -np.ones(6), dt)
    np.testing.assert_allclose(back, step - dv * dt)
    fast = limits.next_goal(np.zeros(6), step, np.full(6, 1.0), dt)  # ahead: at most max_velocity
    np.testing.assert_allclose(fast, step)
    np.testing.assert_array_equal(limits.next_goal(goal, np.zeros(6), np.full(6, np.nan), dt), goal)
    assert limits.interventions["non_finite"] == 1


def test_a_goal_stream_holding_mid_motion_stays_inside_every_bound() -> None:
    """The driver's goal stream: a fast chunk, then holds at a stale measured position behind it."""
    limits = _limits()
    dt = 0.02
    goals, step = [np.zeros(6)], np.zeros(6)
    targets = [np.full(6, 1.2)] * 25 + [np.full(6, 0.1)] * 40  # move out, then "hold" where it was seen
    for target in targets:
        nxt = limits.next_goal(goals[-1], step, target, dt)
        step = nxt - goals[-1]
        goals.append(nxt)
    steps = np.diff(np.array(goals), axis=0)
    assert np.all(np.abs(steps) <= ARM.max_velocity * dt + 1e-9)
    assert np.all(np.abs(np.diff(steps, axis=0)) <= KOCH.safety.max_acceleration * dt**2 + 1e-9)
    assert np.all(np.array(goals) <= limits.upper + 1e-12)
    np.testing.assert_allclose(goals[-1], 0.1, atol=1e-6)  # and it does get there


@pytest.mark.parametrize("field", ["lower", "upper", "max_velocity", "max_acceleration", "max_step"])
def test_non_finite_limits_are_refused(field: str) -> None:
    # a NaN limit makes every comparison false: it would switch the filter off without a word
    values = {"lower": ARM.lower, "upper": ARM.upper, "max_velocity": ARM.max_velocity, "max_step": 0.2,
              "max_acceleration": 10.0}
    values[field] = np.where(np.arange(6) == 2, np.nan, values[field]) if field != "max_step" else np.nan
    with pytest.raises(ValueError, match="must be finite"):
        SafetyLimits(**values)


def test_intervention_kinds_are_the_diagnostics_keys() -> None:
    limits = _limits()
    assert set(limits.interventions) == set(InterventionKind)
    assert [str(kind) for kind in InterventionKind] == [kind.value for kind in InterventionKind]
    assert limits.interventions["max_step"] is limits.interventions[InterventionKind.MAX_STEP]


@pytest.mark.parametrize("chunk", [np.full(6, 0.1), np.zeros((1, 3, 6)), np.zeros((3, 6), complex),
                                   np.full((3, 6), "0.1", object), np.zeros((3, 6), bool)],
                         ids=["one_dimensional", "three_dimensional", "complex", "strings", "bool"])
def test_a_chunk_must_be_steps_by_joints_of_real_numbers(chunk: np.ndarray) -> None:
    """A (n_joints,) array is not read as one point, nor anything else coerced into a chunk: a model
    output that lost its steps axis, or is not numbers, must be a fault its caller sees (the policy
    runner holds), never a command."""
    limits = _limits()
    for filter_ in (limits.safe_chunk, limits.filter_chunk):
        with pytest.raises(ValueError, match=r"a chunk must be \(steps, 6\) real numbers"):
            filter_(chunk, np.zeros(6), DT)
