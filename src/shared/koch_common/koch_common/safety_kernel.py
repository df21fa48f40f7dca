"""The safety filter (see `koch_common.safety`) for one (T, J) chunk, compiled with numba.

The policy node runs it on every chunk it publishes and the driver on every goal: interpreted,
numpy's per-call overhead on a 10x6 chunk costs more than the arithmetic; compiled, a loop over
joints and steps costs a few microseconds. The property tests compare it, point by point and
intervention by intervention, with a vectorised numpy reference kept in `test/safety_reference.py`.

`params` rows (per joint): lower, upper, max_velocity, a*dt, 8/(a*dt^2), a*dt/2, and the distance
from a limit beyond which the braking cap exceeds max_velocity (`braking_distance(max_velocity)`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOWER, UPPER, V_MAX, A_DT, EIGHT_OVER_UNIT, HALF_A_DT, FREE = range(7)
# intervention flags, in safety.InterventionKind order, then the error: no safe command exists
NON_FINITE, POSITION_LIMIT, MAX_STEP, VELOCITY_LIMIT, ACCELERATION_LIMIT, MEASURED_NOT_FINITE = range(6)


@njit(cache=True, nogil=True)
def brake_cap(distance: float, a_dt: float, eight_over_unit: float, half_a_dt: float, dt: float) -> float:
    """The fastest velocity v towards a limit `distance` away from which the joint can still stop before it.

    Moving one step at v and then braking by a*dt per step covers
    S(v) = dt * sum_{i=0..n} (v - i*a*dt), n = floor(v / (a*dt)) (`braking_distance`). S is increasing
    and S(v - a*dt) = S(v) - v*dt, so a state that can brake stays one that can. Inverting S:
    n = the largest integer with S(n*a*dt) = a*dt^2 * n(n+1)/2 <= distance, then v solves the linear
    piece on [n*a*dt, (n+1)*a*dt].
    """
    distance = max(distance, 0.0)
    n = math.floor((math.sqrt(1.0 + eight_over_unit * distance) - 1.0) * 0.5)
    n1 = n + 1.0
    v = (distance / dt + half_a_dt * n * n1) / n1
    return min(max(v, n * a_dt), n1 * a_dt)


@njit(cache=True, nogil=True)
def filter_one(chunk: np.ndarray, measured: np.ndarray, params: np.ndarray, max_step: float, dt: float,
               initial_velocity: np.ndarray, has_initial_velocity: bool, hits: np.ndarray, out: np.ndarray,
               velocities: np.ndarray) -> None:
    """Writes the safe (T, J) chunk for a checked chunk (T >= 1; dt > 0 when T > 1) into `out` and its
    `central_velocities` into `velocities`; sets `hits[kind]` for each intervention kind that changed a
    point, or only `hits[MEASURED_NOT_FINITE]` (leaving the outputs unwritten). Outputs are passed in:
    a returned array costs more to hand back to Python than the loop costs."""
    steps, joints = chunk.shape
    for j in range(joints):
        if not math.isfinite(measured[j]):
            hits[MEASURED_NOT_FINITE] = True
            return
    finite = True
    for k in range(steps):
        for j in range(joints):
            finite = finite and math.isfinite(chunk[k, j])
    if not finite:  # the whole chunk holds the measured position
        hits[NON_FINITE] = True
    for j in range(joints):
        lo, up = params[LOWER, j], params[UPPER, j]
        start = measured[j] if measured[j] >= lo else lo
        start = start if start <= up else up
        for k in range(steps):  # clamp inside the position limits
            x = chunk[k, j] if finite else start
            clamped = x if x >= lo else lo
            clamped = clamped if clamped <= up else up
            if clamped != x:
                hits[POSITION_LIMIT] = True
            out[k, j] = clamped
        wanted_step = out[0, j] - start  # the first point leads the measured one by at most max_step
        step = wanted_step if wanted_step >= -max_step else -max_step
        step = step if step <= max_step else max_step
        if step != wanted_step:
            hits[MAX_STEP] = True
        previous = out[0, j] = start + step
        if steps == 1:
            continue
        v_max, dv, free = params[V_MAX, j], params[A_DT, j], params[FREE, j]
        eight_over_unit, half_a_dt = params[EIGHT_OVER_UNIT, j], params[HALF_A_DT, j]
        v_last, has_v_last = 0.0, has_initial_velocity
        if has_initial_velocity:
            # the previous command's velocity, limited to what can still brake inside the position limits:
            # position limits win over the acceleration limit (an arm already commanded towards a limit
            # faster than it could stop there brakes harder than max_acceleration on the first step)
            v = initial_velocity[j] if math.isfinite(initial_velocity[j]) else 0.0
            v = min(max(v, -v_max), v_max)
            v = max(v, -brake_cap(previous - lo, dv, eight_over_unit, half_a_dt, dt) - dv)
            v_last = min(v, brake_cap(up - previous, dv, eight_over_unit, half_a_dt, dt) + dv)
        for k in range(1, steps):  # velocity, braking and acceleration limits
            target = out[k, j]
            wanted = (target - previous) / dt
            room_up, room_down = up - previous, previous - lo
            if room_up >= free and room_down >= free:  # the braking cap is above v_max: cannot bind
                hi, low = v_max, -v_max
            else:
                hi = min(v_max, brake_cap(room_up, dv, eight_over_unit, half_a_dt, dt))
                low = max(-v_max, -brake_cap(room_down, dv, eight_over_unit, half_a_dt, dt))
            vel_only = wanted if wanted >= low else low
            vel_only = vel_only if vel_only <= hi else hi
            if vel_only != wanted:
                hits[VELOCITY_LIMIT] = True
            if has_v_last:
                hi = hi if hi <= v_last + dv else v_last + dv
                low = low if low >= v_last - dv else v_last - dv
            velocity = wanted if wanted >= low else low
            velocity = velocity if velocity <= hi else hi
            if velocity != vel_only:
                hits[ACCELERATION_LIMIT] = True
            if velocity == wanted:
                position = target  # no limit bound: the target itself, not a rounding of it
            else:
                position = previous + velocity * dt
                position = position if position >= lo else lo
                position = position if position <= up else up
            v_last, has_v_last = (position - previous) / dt, True
            out[k, j] = previous = position
    central_velocities(out, dt, velocities)


@njit(cache=True, nogil=True)
def central_velocities(positions: np.ndarray, dt: float, velocities: np.ndarray) -> None:
    """`SafeChunk.velocities` into `velocities`: each point's neighbours' difference over their time span
    (central inside, one-sided at the ends); zeros for one point or dt <= 0."""
    steps, joints = positions.shape
    if steps < 2 or not dt > 0:
        velocities[:] = 0.0
        return
    for k in range(steps):
        lo, hi = max(k - 1, 0), min(k + 1, steps - 1)
        span = (hi - lo) * dt
        for j in range(joints):
            velocities[k, j] = (positions[hi, j] - positions[lo, j]) / span


def braking_distance(velocity: np.ndarray, a_dt: np.ndarray, dt: float) -> np.ndarray:
    """S(velocity) of `brake_cap`: the distance one step at `velocity` and braking to a stop covers."""
    n = np.floor(velocity / a_dt)
    return dt * ((n + 1.0) * velocity - a_dt * n * (n + 1.0) * 0.5)


def as_compiled(array: np.ndarray) -> np.ndarray:
    """`array` as the one array type the kernels are compiled for: C-contiguous, writable float64.
    numba compiles a read-only array as another type, inside the call that first passes one (a stall in
    a tick: up to a second on a fresh install); the runner's initial velocity is one, a row of the last
    command's cached read-only velocities, so a read-only array is copied (a few floats)."""
    array = np.ascontiguousarray(array, dtype=np.float64)
    return array if array.flags.writeable else array.copy()


def warm_up() -> None:
    """Compile both kernels (or load them from numba's cache) now, with the argument types the safety
    layer passes (`as_compiled`): otherwise the first call does, ~0.1-1 s on a node's first command."""
    chunk, out = np.zeros((2, 1)), np.empty((2, 1))
    filter_one(chunk, chunk[0], np.ones((7, 1)), 0.0, 1.0, chunk[0], False, np.zeros(6, np.bool_), out, out.copy())
    central_velocities(chunk, 1.0, out)
