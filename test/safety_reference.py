"""A vectorised numpy reference of the safety filter, the oracle the property tests hold the compiled kernel to.

`koch_common.safety` runs one chunk at a time through `safety_kernel` (numba). This module states the same
filter over a batch of chunks with numpy, in the same operations on the same floats and in the same order
(`np.maximum`/`np.minimum` are the kernel's `a if a >= b else b`/`a if a <= b else b` for finite floats),
so the two agree exactly, points and intervention counts alike. It lives with the tests: production never
runs it, and a second implementation in `src` would be a second thing to keep safe.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from koch_common.safety import InterventionKind, SafetyLimits


class Braking:
    """Largest velocity towards a limit `distance` away that can still stop before it (`safety_kernel.brake_cap`)."""

    def __init__(self, max_acceleration: np.ndarray, dt: float, max_velocity: np.ndarray) -> None:
        self.dt = dt
        self.a_dt = max_acceleration * dt
        self.eight_over_unit = 8.0 / (self.a_dt * dt)
        self.half_a_dt = 0.5 * self.a_dt
        self.free_distance = self.distance(max_velocity)

    def distance(self, velocity: np.ndarray) -> np.ndarray:
        n = np.floor(velocity / self.a_dt)
        return self.dt * ((n + 1.0) * velocity - self.a_dt * n * (n + 1.0) * 0.5)

    def __call__(self, distance: np.ndarray) -> np.ndarray:
        distance = np.maximum(distance, 0.0)
        n = np.floor((np.sqrt(1.0 + self.eight_over_unit * distance) - 1.0) * 0.5)
        n1 = n + 1.0
        v = (distance / self.dt + self.half_a_dt * n * n1) / n1
        return np.minimum(np.maximum(v, n * self.a_dt), n1 * self.a_dt)


class ReferenceFilter:
    """`SafetyLimits`' chunk filter over a batch: chunks (B, T, J), measured (B, J) -> safe (B, T, J)."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.lower, self.upper = limits.lower, limits.upper
        self.max_velocity = np.asarray(limits.max_velocity, np.float64)
        self.max_acceleration = np.asarray(limits.max_acceleration, np.float64)
        self.max_step = float(limits.max_step)
        self.interventions: Counter[str] = Counter({kind: 0 for kind in InterventionKind})

    def braking(self, dt: float) -> Braking:
        return Braking(self.max_acceleration, dt, self.max_velocity)

    def filter_chunks(self, chunks: np.ndarray, measured: np.ndarray, dt: float,
                      initial_velocity: np.ndarray | None = None) -> np.ndarray:
        chunks = np.asarray(chunks, dtype=np.float64)
        measured = np.asarray(measured, dtype=np.float64)
        assert chunks.ndim == 3 and measured.shape == (chunks.shape[0], chunks.shape[2])
        assert np.isfinite(measured).all()
        steps = chunks.shape[1]
        if steps == 0:
            return chunks.copy()
        lower, upper = self.lower, self.upper
        start = np.minimum(np.maximum(measured, lower), upper)
        # Non-finite anywhere in a chunk -> the whole chunk holds the measured position.
        finite = np.isfinite(chunks).all(axis=(1, 2))
        if not finite.all():
            self.interventions[InterventionKind.NON_FINITE] += int((~finite).sum())
            chunks = np.where(finite[:, None, None], chunks, start[:, None, :])
        clamped = np.minimum(np.maximum(chunks, lower), upper)
        self._count(InterventionKind.POSITION_LIMIT, (clamped != chunks).any(axis=(1, 2)))
        safe = np.empty_like(clamped)
        wanted_step = clamped[:, 0] - start
        step = np.minimum(np.maximum(wanted_step, -self.max_step), self.max_step)
        self._count(InterventionKind.MAX_STEP, (step != wanted_step).any(axis=1))
        safe[:, 0] = start + step
        if steps == 1:
            return safe
        v_prev = None if initial_velocity is None else self.feasible_initial_velocity(
            safe[:, 0], np.asarray(initial_velocity, np.float64), dt)
        return self._rate_limited(safe[:, 0], clamped, v_prev, dt, self.braking(dt))

    def _count(self, kind: InterventionKind, hits: np.ndarray) -> None:
        self.interventions[kind] += int(hits.sum())

    def _rate_limited(self, first: np.ndarray, clamped: np.ndarray, v_prev: np.ndarray | None, dt: float,
                      brake: Braking) -> np.ndarray:
        steps = clamped.shape[1]
        safe = np.empty_like(clamped)
        safe[:, 0] = first
        dv = brake.a_dt
        vel_hits = np.zeros(first.shape, bool)
        acc_hits = np.zeros(first.shape, bool)
        lower, upper, v_max = self.lower, self.upper, self.max_velocity
        previous = safe[:, 0]
        for k in range(1, steps):
            wanted = (clamped[:, k] - previous) / dt
            room_up, room_down = upper - previous, previous - lower
            free = (room_up >= brake.free_distance) & (room_down >= brake.free_distance)
            hi = np.where(free, v_max, np.minimum(v_max, brake(room_up)))
            lo = np.where(free, -v_max, np.maximum(-v_max, -brake(room_down)))
            vel_only = np.minimum(np.maximum(wanted, lo), hi)
            vel_hits |= vel_only != wanted
            if v_prev is not None:
                hi = np.minimum(hi, v_prev + dv)
                lo = np.maximum(lo, v_prev - dv)
            velocity = np.minimum(np.maximum(wanted, lo), hi)
            acc_hits |= velocity != vel_only
            # no limit bound: the target itself (previous + velocity * dt could differ from it by rounding)
            safe[:, k] = np.where(velocity == wanted, clamped[:, k],
                                  np.minimum(np.maximum(previous + velocity * dt, lower), upper))
            v_prev = (safe[:, k] - previous) / dt
            previous = safe[:, k]
        self._count(InterventionKind.VELOCITY_LIMIT, vel_hits.any(axis=1))
        self._count(InterventionKind.ACCELERATION_LIMIT, acc_hits.any(axis=1))
        return safe

    def feasible_initial_velocity(self, start: np.ndarray, velocity: np.ndarray, dt: float) -> np.ndarray:
        """`velocity` at `start` limited to what can still brake inside the position limits."""
        brake = self.braking(dt)
        dv = brake.a_dt
        velocity = np.where(np.isfinite(velocity), velocity, 0.0)
        velocity = np.minimum(np.maximum(velocity, -self.max_velocity), self.max_velocity)
        return np.minimum(np.maximum(velocity, -brake(start - self.lower) - dv), brake(self.upper - start) + dv)
