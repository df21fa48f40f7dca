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

The filter itself is one compiled loop (`safety_kernel`, numba): a chunk is filtered on every
30 Hz tick, where numpy's per-call overhead on a 20x6 array would cost more than the arithmetic.
The property tests check it against a vectorised numpy reference kept in `test/`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from koch_common import safety_kernel
from koch_common.enums import StrEnum
from koch_common.robot import ArmConfig, SafetyConfig


class InterventionKind(StrEnum):
    """Why the safety layer changed a command; the value is the key on `/diagnostics`.

    The order is the compiled kernel's flag order (`safety_kernel.NON_FINITE` ...)."""

    NON_FINITE = "non_finite"
    POSITION_LIMIT = "position_limit"
    MAX_STEP = "max_step"
    VELOCITY_LIMIT = "velocity_limit"
    ACCELERATION_LIMIT = "acceleration_limit"


INTERVENTION_KINDS = tuple(InterventionKind)


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
            return velocities
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
    max_acceleration: np.ndarray | float  # (J,), or one value for every joint
    # counts by kind: InterventionKind here; the policy runner adds its own kinds (str enums too)
    interventions: Counter[str] = field(default_factory=Counter)
    _kernel_params: dict[float, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.lower = np.asarray(self.lower, dtype=np.float64)
        self.upper = np.asarray(self.upper, dtype=np.float64)
        self.max_velocity = np.broadcast_to(np.asarray(self.max_velocity, np.float64), self.lower.shape).copy()
        self.max_acceleration = np.broadcast_to(np.asarray(self.max_acceleration, np.float64),
                                                self.lower.shape).copy()
        limits = (self.lower, self.upper, self.max_velocity, self.max_acceleration, np.float64(self.max_step))
        if not all(np.isfinite(values).all() for values in limits):
            raise ValueError(f"safety limits must be finite: lower {self.lower}, upper {self.upper}, max_velocity "
                             f"{self.max_velocity}, max_acceleration {self.max_acceleration}, max_step "
                             f"{self.max_step}; fix koch.yaml")
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
        # Checked before any conversion: a (J,) array read as one point once published a model output that
        # lost its steps axis, and float64 conversion would take complex, bool or numeric strings silently.
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[1] != self.lower.size or chunk.dtype.kind not in "fiu":
            raise ValueError(f"a chunk must be (steps, {self.lower.size}) real numbers for this arm, got shape "
                             f"{chunk.shape} of {chunk.dtype}")
        chunk = np.asarray(chunk, dtype=np.float64)
        measured = np.asarray(measured, np.float64)
        self._check_shapes(chunk.shape, measured.shape, dt)
        return self._filter_one(chunk, measured, dt, initial_velocity)  # it checks that measured is finite

    def hold(self, measured: np.ndarray) -> SafeChunk:
        """A one-point chunk holding the measured position (clamped inside the limits)."""
        return self._safe(self._filter_checked(np.asarray(measured)[None], measured, 0.0, None), 0.0)

    @staticmethod
    def _safe(filtered: tuple[np.ndarray, np.ndarray], dt: float) -> SafeChunk:
        command = SafeChunk(filtered[0], dt)
        command._cache_velocities(filtered[1])  # the kernel computed them with the points
        return command

    def _check_shapes(self, chunk: tuple[int, ...], measured: tuple[int, ...], dt: float) -> None:
        joints = self.lower.size
        if len(chunk) != 2 or chunk[1] != joints:
            raise ValueError(f"a chunk must be (steps, {joints}) for this arm, got shape {chunk}")
        if measured != (joints,):
            raise ValueError(f"measured must be ({joints},), got {measured}")
        if chunk[0] > 1 and not dt > 0:
            raise ValueError(f"a chunk of {chunk[0]} points needs dt > 0, got {dt}")

    def _filter_one(self, chunk: np.ndarray, measured: np.ndarray, dt: float,
                    initial_velocity: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One checked (T, J) chunk through the compiled `safety_kernel.filter_one`; counts the interventions.
        Returns the safe points and their velocities."""
        safe, velocities = np.empty(chunk.shape), np.empty(chunk.shape)  # C-contiguous, as compiled
        if len(chunk) == 0:
            return safe, velocities
        params = self._kernel_params.get(dt)
        if params is None:
            params = self._kernel_params[dt] = self._pack_kernel_params(dt)
        hits = np.zeros(len(INTERVENTION_KINDS) + 1, np.bool_)
        has_velocity = initial_velocity is not None
        # without one, `measured` stands in (unread): the compiled signature takes an array either way
        velocity = safety_kernel.as_compiled(measured if initial_velocity is None else initial_velocity)
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
            a_dt = np.asarray(self.max_acceleration) * dt
            params[safety_kernel.A_DT] = a_dt
            params[safety_kernel.EIGHT_OVER_UNIT] = 8.0 / (a_dt * dt)
            params[safety_kernel.HALF_A_DT] = 0.5 * a_dt
            params[safety_kernel.FREE] = safety_kernel.braking_distance(self.max_velocity, a_dt, dt)
        return params

    # -- single goals (driver) ----------------------------------------------------------------
    def filter_point(self, target: np.ndarray, measured: np.ndarray) -> np.ndarray:
        return self.filter_chunk(np.asarray(target)[None], measured, dt=0.0)[0]

    def next_goal(self, previous_goal: np.ndarray, previous_step: np.ndarray, target: np.ndarray,
                  dt: float) -> np.ndarray:
        """The goal to write one control period `dt` after `previous_goal`, as close to `target` as the limits
        allow: inside the position limits, at most `max_velocity * dt` from `previous_goal`, and changing
        the step by at most `max_acceleration * dt^2` (braking early enough near a limit). `previous_step`
        is the last change of the goal (zeros when the goal stood still, e.g. after a cycle without a write).

        The same compiled filter as a chunk's, on the two points (previous goal, target) with the previous
        step as the initial velocity: the goal stream the servos see is bounded in velocity and acceleration
        whatever arrives, so a hold mid-motion (a fault, an e-stop, the end of a chunk) brakes at
        `max_acceleration` instead of reversing the goal in one period. A non-finite target holds the goal.
        """
        previous_goal = np.asarray(previous_goal, np.float64)
        chunk = np.stack([previous_goal, np.asarray(target, np.float64)])
        return self.filter_chunk(chunk, previous_goal, dt, np.asarray(previous_step, np.float64) / dt)[1]


def _measured_not_finite(measured: np.ndarray) -> ValueError:
    return ValueError(f"the measured position is not finite ({measured}): no safe command exists; "
                      "check the joint state source")
