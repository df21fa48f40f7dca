"""Joint limits every command passes through, in the driver and in the policy node alike.

ROS-free so the same checks run at both ends of the command path (defence in depth). For a
chunk of position targets, one per 1/fps:

- a chunk holding any NaN/inf value is rejected whole: the output holds the measured
  position (a model that emits garbage in one joint is not trusted in the others);
- every target is clamped inside the joint limits less a margin;
- the first point may lead the measured position by at most `max_step`;
- between consecutive points the velocity stays within `max_velocity` and its change
  within `max_acceleration * dt`; near a limit the velocity is also capped so the joint can
  still brake to a stop inside the limit at `max_acceleration` (otherwise the position clamp
  would stop it in one step, an unbounded deceleration).

The chunk filter is vectorised over a batch of chunks (`filter_chunks`), which is what the
property tests use to push 10^5 chunks through it; `filter_chunk` is the one-chunk view (the
node's every tick), which runs the same operations as a compiled loop (`safety_kernel`, numba).
The property tests pass all 10^5 chunks through both and require the same points.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from koch_common import safety_kernel
from koch_common.robot import ArmConfig, SafetyConfig

INTERVENTION_KINDS = ("non_finite", "position_limit", "max_step", "velocity_limit", "acceleration_limit")


@dataclass(frozen=True)
class SafeChunk:
    """Positions (T, J) that came out of `SafetyLimits`; publishers accept only this type."""

    positions: np.ndarray
    dt: float
    _velocities: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def velocities(self) -> np.ndarray:
        """Per-point velocities consistent with the limited positions: each point's neighbours' difference
        over their time span (central inside, one-sided at the ends: np.gradient's), compiled: numpy's
        ~10 calls on a 10x6 chunk cost more than the node's whole serialization of it."""
        if self._velocities is None:
            positions = safety_kernel.as_compiled(self.positions)
            velocities = np.empty_like(positions)
            safety_kernel.central_velocities(positions, float(self.dt), velocities)
            self._cache_velocities(velocities)
        return self._velocities

    def _cache_velocities(self, velocities: np.ndarray) -> None:
        velocities.flags.writeable = False  # one cached array for every caller: none may change it for the others
        object.__setattr__(self, "_velocities", velocities)  # frozen: computed once

    def velocity_at(self, k: int) -> np.ndarray:
        """`velocities()[k]`, zero outside the chunk (the runner asks each tick for the commanded velocity;
        chunks from `SafetyLimits` carry their velocities, so this is a lookup)."""
        velocities = self.velocities()
        return velocities[k] if 0 <= k < len(velocities) else np.zeros(self.positions.shape[1])


@dataclass
class SafetyLimits:
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_step: float
    max_acceleration: np.ndarray | float
    interventions: Counter[str] = field(default_factory=Counter)
    _brakes: dict[float, _Braking] = field(default_factory=dict, init=False, repr=False, compare=False)
    _kernel_params: dict[float, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.lower = np.asarray(self.lower, dtype=np.float64)
        self.upper = np.asarray(self.upper, dtype=np.float64)
        self.max_velocity = np.broadcast_to(np.asarray(self.max_velocity, np.float64), self.lower.shape).copy()
        self.max_acceleration = np.broadcast_to(np.asarray(self.max_acceleration, np.float64),
                                                self.lower.shape).copy()
        if np.any(self.lower > self.upper):
            raise ValueError(f"safety limits are empty: lower {self.lower} > upper {self.upper}; "
                             "reduce safety.position_margin or fix the joint limits in koch.yaml")
        if np.any(self.max_velocity <= 0) or np.any(self.max_acceleration <= 0) or self.max_step < 0:
            raise ValueError("max_velocity and max_acceleration must be > 0 and max_step >= 0")
        for kind in INTERVENTION_KINDS:  # every kind reported, zeros included
            self.interventions.setdefault(kind, 0)
        safety_kernel.warm_up()  # at start-up, not on the first command

    @classmethod
    def for_arm(cls, arm: ArmConfig, safety: SafetyConfig) -> SafetyLimits:
        return cls(
            lower=arm.lower + safety.position_margin,
            upper=arm.upper - safety.position_margin,
            max_velocity=arm.max_velocity,
            max_step=safety.max_step_from_present,
            max_acceleration=safety.max_acceleration,
        )

    # -- chunks -------------------------------------------------------------------------
    def filter_chunk(self, chunk: np.ndarray, measured: np.ndarray, dt: float,
                     initial_velocity: np.ndarray | None = None) -> np.ndarray:
        """Make a (T, J) chunk of position targets safe to send, starting from `measured`.

        `initial_velocity` (J,), when given, is the velocity the arm is commanded at now (the
        previous command's), so the acceleration limit also holds across chunks.
        """
        return self._filter_checked(chunk, measured, dt, initial_velocity)[0]

    def safe_chunk(self, chunk: np.ndarray, measured: np.ndarray, dt: float,
                   initial_velocity: np.ndarray | None = None) -> SafeChunk:
        return self._safe(self._filter_checked(chunk, measured, dt, initial_velocity), dt)

    def _filter_checked(self, chunk: np.ndarray, measured: np.ndarray, dt: float,
                        initial_velocity: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        chunk = np.array(chunk, dtype=np.float64, ndmin=2, copy=None)
        measured = np.asarray(measured, np.float64)
        self._check_shapes((1, *chunk.shape), (1, *measured.shape), dt)
        return self._filter_one(chunk, measured, dt, initial_velocity)  # it checks that measured is finite

    def hold(self, measured: np.ndarray) -> SafeChunk:
        """A one-point chunk holding the measured position (clamped inside the limits)."""
        return self._safe(self._filter_checked(np.asarray(measured)[None], measured, 0.0, None), 0.0)

    @staticmethod
    def _safe(filtered: tuple[np.ndarray, np.ndarray], dt: float) -> SafeChunk:
        command = SafeChunk(filtered[0], dt)
        command._cache_velocities(filtered[1])  # the kernel computed them with the points
        return command

    def filter_chunks(self, chunks: np.ndarray, measured: np.ndarray, dt: float,
                      initial_velocity: np.ndarray | None = None, scalar_single: bool = True) -> np.ndarray:
        """Batched `filter_chunk`: chunks (B, T, J), measured (B, J) -> safe (B, T, J).

        A single chunk (the node's every tick) goes through `_filter_one` (no batch axis, the compiled
        `safety_kernel`), unless `scalar_single=False`; the tests compare the two.
        """
        chunks = np.asarray(chunks, dtype=np.float64)
        measured = np.asarray(measured, dtype=np.float64)
        self._check(chunks, measured, dt)
        if len(chunks) == 1 and scalar_single:
            return self._filter_one(chunks[0], measured[0], dt,
                                    None if initial_velocity is None else initial_velocity[0])[0][None]
        steps = chunks.shape[1]
        if steps == 0:
            return chunks.copy()
        # np.minimum/np.maximum rather than np.clip, whose Python wrapper costs more than the arithmetic
        # here; interventions are counted only when there are any (this runs on every 30 Hz tick).
        lower, upper = self.lower, self.upper
        start = np.minimum(np.maximum(measured, lower), upper)
        # Non-finite anywhere in a chunk -> the whole chunk holds the measured position.
        finite = np.isfinite(chunks).all(axis=(1, 2))
        if not finite.all():
            self.interventions["non_finite"] += int((~finite).sum())
            chunks = np.where(finite[:, None, None], chunks, start[:, None, :])
        clamped = np.minimum(np.maximum(chunks, lower), upper)
        self._count("position_limit", (clamped != chunks).any(axis=(1, 2)))

        safe = np.empty_like(clamped)
        wanted_step = clamped[:, 0] - start
        step = np.minimum(np.maximum(wanted_step, -self.max_step), self.max_step)
        self._count("max_step", (step != wanted_step).any(axis=1))
        safe[:, 0] = start + step
        if steps == 1:
            return safe
        brake = self._braking(dt)
        v_prev = None if initial_velocity is None else self.feasible_initial_velocity(
            safe[:, 0], np.asarray(initial_velocity, np.float64), dt)
        return self._rate_limited(safe[:, 0], clamped, v_prev, dt, brake)

    def _check(self, chunks: np.ndarray, measured: np.ndarray, dt: float) -> None:
        self._check_shapes(chunks.shape, measured.shape, dt)
        if not np.isfinite(measured).all():
            raise _measured_not_finite(measured)

    def _check_shapes(self, chunks: tuple[int, ...], measured: tuple[int, ...], dt: float) -> None:
        joints = self.lower.size
        if len(chunks) != 3 or chunks[2] != joints:
            raise ValueError(f"chunks must be (batch, steps, {joints}) for this arm, got shape {chunks}")
        if measured != (chunks[0], joints):
            raise ValueError(f"measured must be ({chunks[0]}, {joints}), got {measured}")
        if chunks[1] > 1 and not dt > 0:
            raise ValueError(f"a chunk of {chunks[1]} points needs dt > 0, got {dt}")

    def _filter_one(self, chunk: np.ndarray, measured: np.ndarray, dt: float,
                    initial_velocity: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """`filter_chunks`' steps for one checked (T, J) chunk, the node's every tick: the compiled loop
        of `safety_kernel` (same operations on the same floats, a few microseconds instead of the
        ~0.1-0.2 ms numpy spends on calls over 20x6 floats). Returns the safe points and their velocities."""
        safe, velocities = np.empty(chunk.shape), np.empty(chunk.shape)  # C-contiguous, as compiled
        if len(chunk) == 0:
            return safe, velocities
        params = self._kernel_params.get(dt)
        if params is None:
            params = self._kernel_params[dt] = self._pack_kernel_params(dt)
        hits = np.zeros(len(INTERVENTION_KINDS) + 1, np.bool_)
        has_velocity = initial_velocity is not None
        # without one, `measured` stands in (unread): the compiled signature takes an array either way
        velocity = safety_kernel.as_compiled(initial_velocity if has_velocity else measured)
        safety_kernel.filter_one(safety_kernel.as_compiled(chunk), safety_kernel.as_compiled(measured), params,
                                 float(self.max_step), float(dt), velocity, has_velocity, hits, safe, velocities)
        if hits[safety_kernel.MEASURED_NOT_FINITE]:
            raise _measured_not_finite(measured)
        for kind, hit in zip(INTERVENTION_KINDS, hits.tolist()):
            if hit:
                self.interventions[kind] += 1
        return safe, velocities

    def _pack_kernel_params(self, dt: float) -> np.ndarray:
        """`safety_kernel`'s per-joint rows for `dt` (the braking rows stay NaN for dt = 0: one point only)."""
        params = np.full((7, self.lower.size), np.nan)
        params[safety_kernel.LOWER], params[safety_kernel.UPPER] = self.lower, self.upper
        params[safety_kernel.V_MAX] = self.max_velocity
        if dt > 0:
            brake = self._braking(dt)
            params[safety_kernel.A_DT] = brake.a_dt
            params[safety_kernel.EIGHT_OVER_UNIT] = brake.eight_over_unit
            params[safety_kernel.HALF_A_DT] = brake.half_a_dt
            params[safety_kernel.FREE] = brake.free_distance
        return params

    def _count(self, kind: str, hits: np.ndarray) -> None:
        if hits.any():
            self.interventions[kind] += int(hits.sum())

    def _braking(self, dt: float) -> _Braking:
        """The braking constants for `dt`, made once (the limits do not change after construction)."""
        brake = self._brakes.get(dt)
        if brake is None:
            brake = self._brakes[dt] = _Braking(self.max_acceleration, dt, self.max_velocity)
        return brake

    def _rate_limited(self, first: np.ndarray, clamped: np.ndarray, v_prev: np.ndarray | None, dt: float,
                      brake: _Braking) -> np.ndarray:
        """The per-step velocity, acceleration and braking limits, from the (already step-limited)
        first point; counts velocity and acceleration interventions."""
        steps = clamped.shape[1]
        safe = np.empty_like(clamped)
        safe[:, 0] = first
        dv = brake.a_dt
        vel_hits = np.zeros(first.shape, bool)  # per (chunk, joint), reduced after the loop
        acc_hits = np.zeros(first.shape, bool)
        # This loop runs on published chunks with (B, 6) arrays, where each numpy call costs more
        # than its arithmetic: so no np.clip (a Python wrapper) and one braking call for both limits.
        lower, upper, v_max, neg_v_max = self.lower, self.upper, self.max_velocity, -self.max_velocity
        room_sign = np.array([1.0, -1.0])[:, None, None]  # distance to upper, then to lower
        limits = np.stack([upper, -lower])[:, None, :]
        # Farther than this from both limits, the braking cap is above max_velocity (S is increasing),
        # so it cannot bind: most points skip its ~17 numpy calls.
        free_distance = brake.free_distance
        previous = safe[:, 0]
        for k in range(1, steps):
            wanted = (clamped[:, k] - previous) / dt
            distance = limits - room_sign * previous
            if (distance >= free_distance).all():
                hi, lo = v_max, neg_v_max
            else:
                v_brake = brake(distance)
                hi = np.minimum(v_max, v_brake[0])
                lo = np.maximum(neg_v_max, -v_brake[1])
            vel_only = np.minimum(np.maximum(wanted, lo), hi)
            vel_hits |= vel_only != wanted
            if v_prev is not None:
                hi = np.minimum(hi, v_prev + dv)
                lo = np.maximum(lo, v_prev - dv)
            velocity = np.minimum(np.maximum(wanted, lo), hi)
            acc_hits |= velocity != vel_only
            # No limit bound: the target itself (previous + velocity * dt could differ from it by rounding)
            safe[:, k] = np.where(velocity == wanted, clamped[:, k],
                                  np.minimum(np.maximum(previous + velocity * dt, lower), upper))
            v_prev = (safe[:, k] - previous) / dt
            previous = safe[:, k]
        self.interventions["velocity_limit"] += int(vel_hits.any(axis=1).sum())
        self.interventions["acceleration_limit"] += int(acc_hits.any(axis=1).sum())
        return safe

    def feasible_initial_velocity(self, start: np.ndarray, velocity: np.ndarray, dt: float) -> np.ndarray:
        """`velocity` at `start` limited to what can still brake inside the position limits.

        Position limits win over the acceleration limit: an arm already commanded towards a
        limit faster than it could stop there brakes harder than `max_acceleration` on the
        first step. From any other start the filter keeps every step within all the limits.
        """
        brake = self._braking(dt)
        dv = brake.a_dt
        velocity = np.where(np.isfinite(velocity), velocity, 0.0)
        velocity = np.minimum(np.maximum(velocity, -self.max_velocity), self.max_velocity)
        v_brake = brake(np.stack([self.upper - start, start - self.lower]))
        return np.minimum(np.maximum(velocity, -v_brake[1] - dv), v_brake[0] + dv)

    # -- single goals (driver) ----------------------------------------------------------------
    def filter_point(self, target: np.ndarray, measured: np.ndarray) -> np.ndarray:
        return self.filter_chunk(np.asarray(target)[None], measured, dt=0.0)[0]

    def limit_rate(self, previous_goal: np.ndarray, goal: np.ndarray, dt: float) -> np.ndarray:
        """Move from `previous_goal` towards `goal` no faster than the velocity limits."""
        goal = np.asarray(goal, dtype=np.float64)
        if not np.all(np.isfinite(goal)):
            self.interventions["non_finite"] += 1
            return np.asarray(previous_goal, dtype=np.float64).copy()
        step = self.max_velocity * dt
        delta = goal - previous_goal
        if np.any(np.abs(delta) > step):
            self.interventions["velocity_limit"] += 1
        return previous_goal + np.clip(delta, -step, step)


def _measured_not_finite(measured: np.ndarray) -> ValueError:
    return ValueError(f"the measured position is not finite ({measured}): no safe command exists; "
                      "check the joint state source")


class _Braking:
    """Largest velocity v towards a limit `distance` away that can still stop before it.

    Moving one step at v and then braking by a*dt per step covers
    S(v) = dt * sum_{i=0..n} (v - i*a*dt), n = floor(v / (a*dt)). S is increasing and
    satisfies S(v - a*dt) = S(v) - v*dt, so a state that can brake stays one that can.
    Inverting S: n = the largest integer with S(n*a*dt) = a*dt^2 * n(n+1)/2 <= distance,
    then v solves the linear piece on [n*a*dt, (n+1)*a*dt].
    """

    def __init__(self, max_acceleration: np.ndarray, dt: float, max_velocity: np.ndarray) -> None:
        self.dt = dt
        self.a_dt = max_acceleration * dt
        self.eight_over_unit = 8.0 / (self.a_dt * dt)
        self.half_a_dt = 0.5 * self.a_dt
        # Farther than this from a limit, the cap is above max_velocity (S is increasing): it cannot bind.
        self.free_distance = self.distance(max_velocity)

    def distance(self, velocity: np.ndarray) -> np.ndarray:
        """S(velocity): the distance one step at `velocity` and braking to a stop covers."""
        n = np.floor(velocity / self.a_dt)
        return self.dt * ((n + 1.0) * velocity - self.a_dt * n * (n + 1.0) * 0.5)

    def __call__(self, distance: np.ndarray) -> np.ndarray:
        distance = np.maximum(distance, 0.0)
        n = np.floor((np.sqrt(1.0 + self.eight_over_unit * distance) - 1.0) * 0.5)
        n1 = n + 1.0
        v = (distance / self.dt + self.half_a_dt * n * n1) / n1
        return np.minimum(np.maximum(v, n * self.a_dt), n1 * self.a_dt)
