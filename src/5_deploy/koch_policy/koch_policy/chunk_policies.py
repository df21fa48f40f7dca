"""How predicted action chunks become the actions executed tick by tick (ROS-free).

A chunk predicted from the observation at time t_obs holds the actions for t_obs + i / fps.
Every policy answers the same questions for the runner: which actions are due from `now`
(`due`), whether to ask for a new inference (`needs_inference`, given the measured latency
in ticks), and how a newly arrived chunk merges with what is planned (`accept`).

- `execute_k`: execute the first `n_action_steps` of each chunk, then replan (receding
  horizon; ACT/Diffusion's n_action_steps, RDT's 8-16 of 64). Replanning is requested
  `lead_ticks` early so the next chunk lands before the current one runs out.
- `temporal_ensembling`: ACT's temporal ensemble. The policy runs every tick (whenever the
  worker is free); the action for a time step is the average of every chunk's prediction for
  it with weights exp(-m * i), i = 0 for the oldest prediction (ACT, m = 0.01).
- `overlap_blend`: LeRobot async inference's "weighted_average": where a new chunk overlaps
  the plan, action = w_old * old + (1 - w_old) * new (0.3 / 0.7); a new chunk is requested
  when fewer than `threshold` of a chunk is left (LeRobot's chunk_size_threshold, 0.5).
- `latest_only`: the newest chunk replaces the plan from now on, executed to its end;
  requested at the same threshold.
- `rtc`: Real-Time Chunking. A flow-matching policy (SmolVLA) run with PyTorch is asked for a
  chunk that continues the current plan: the runner hands it the plan's actions from t_obs on and
  the expected inference delay d (`prefix_at`), and LeRobot's RTC steers every denoising step
  towards them (`PolicyRuntime.predict_guided`). Chunk side, for every family, the d actions
  executed while the model was inferring are frozen to the old plan and the rest of the overlap
  is blended towards the new chunk with RTC's linear prefix-weight schedule: for ACT and
  Diffusion, which cannot be guided, this freeze-and-blend is all of it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from koch_common.enums import StrEnum


class ChunkPolicyName(StrEnum):
    """A chunk policy's name: the policy node's `chunk_policy` parameter and the launch argument."""

    EXECUTE_K = "execute_k"
    TEMPORAL_ENSEMBLING = "temporal_ensembling"
    OVERLAP_BLEND = "overlap_blend"
    LATEST_ONLY = "latest_only"
    RTC = "rtc"


DEFAULT_CHUNK_POLICY = ChunkPolicyName.EXECUTE_K
# A new chunk is requested when fewer than this fraction of the current one is left (LeRobot's
# chunk_size_threshold); the policy node's replan_threshold parameter.
DEFAULT_REPLAN_THRESHOLD = 0.5


class ChunkPolicy:
    """Base: a single plan (actions from `t0` on, one per tick)."""

    name: ClassVar[ChunkPolicyName]

    def __init__(self, fps: float, n_action_steps: int, threshold: float = DEFAULT_REPLAN_THRESHOLD) -> None:
        if fps <= 0 or n_action_steps < 1 or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"chunk policy needs fps > 0, n_action_steps >= 1, 0 <= threshold <= 1; got "
                             f"{fps}, {n_action_steps}, {threshold}")
        self.fps = fps
        self.n_action_steps = n_action_steps
        self.threshold = threshold
        self._plan: np.ndarray | None = None
        self._t0 = 0.0
        self.chunk_len = 0
        self._merged_until = 0.0  # until then the plan mixes the old chunk and the new one

    @classmethod
    def create(cls, fps: float, n_action_steps: int, threshold: float, *, blend_old_weight: float,
               ensemble_coeff: float) -> ChunkPolicy:
        """One from the options every policy is offered (`make_chunk_policy`'s); each takes what it uses."""
        return cls(fps, n_action_steps, threshold)

    def clear(self) -> None:
        self._plan = None

    def _index(self, now: float, t0: float | None = None) -> int:
        return max(0, int(math.floor((now - (self._t0 if t0 is None else t0)) * self.fps + 1e-6)))

    def _end(self) -> int:
        return 0 if self._plan is None else len(self._plan)

    def due(self, now: float) -> np.ndarray | None:
        """Actions from `now` to the end of the executable plan; None when there are none."""
        if self._plan is None:
            return None
        start, end = self._index(now), self._end()
        return self._plan[start:end] if start < end else None

    def ticks_left(self, now: float) -> int:
        return 0 if self._plan is None else max(0, self._end() - self._index(now))

    def chunks_in_use(self, now: float) -> int:
        if self.ticks_left(now) == 0:
            return 0
        return 2 if now < self._merged_until else 1

    def needs_inference(self, now: float, lead_ticks: int) -> bool:
        return self.ticks_left(now) <= max(lead_ticks, math.ceil(self.threshold * self.chunk_len))

    def accept(self, chunk: np.ndarray, t_obs: float, now: float | None = None) -> None:
        now = t_obs if now is None else now
        chunk = np.asarray(chunk, dtype=np.float64)
        self.chunk_len = len(chunk)
        self._plan, self._t0 = chunk, t_obs

    def _old_plan_at(self, t_obs: float, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The current plan's actions for t_obs + i/fps (i < length) and which exist."""
        joints = self._plan.shape[1] if self._plan is not None else 0
        old = np.zeros((length, joints))
        have: np.ndarray = np.zeros(length, bool)
        if self._plan is not None:
            offset = int(round((t_obs - self._t0) * self.fps))
            idx = np.arange(length) + offset
            have = (idx >= 0) & (idx < len(self._plan))
            old[have] = self._plan[idx[have]]
        return old, have


class ExecuteKThenReplan(ChunkPolicy):
    name = ChunkPolicyName.EXECUTE_K

    def _end(self) -> int:
        return 0 if self._plan is None else min(self.n_action_steps, len(self._plan))

    def needs_inference(self, now: float, lead_ticks: int) -> bool:
        return self.ticks_left(now) <= lead_ticks


class LatestOnly(ChunkPolicy):
    name = ChunkPolicyName.LATEST_ONLY


class OverlapBlend(ChunkPolicy):
    name = ChunkPolicyName.OVERLAP_BLEND

    def __init__(self, fps: float, n_action_steps: int, threshold: float = DEFAULT_REPLAN_THRESHOLD,
                 old_weight: float = 0.3) -> None:
        super().__init__(fps, n_action_steps, threshold)
        if not 0.0 <= old_weight <= 1.0:
            raise ValueError(f"overlap_blend old weight must be in [0, 1], got {old_weight}")
        self.old_weight = old_weight

    @classmethod
    def create(cls, fps: float, n_action_steps: int, threshold: float, *, blend_old_weight: float,
               ensemble_coeff: float) -> ChunkPolicy:
        return cls(fps, n_action_steps, threshold, blend_old_weight)

    def accept(self, chunk: np.ndarray, t_obs: float, now: float | None = None) -> None:
        now = t_obs if now is None else now
        chunk = np.asarray(chunk, dtype=np.float64)
        old, have = self._old_plan_at(t_obs, len(chunk))
        merged = chunk.copy()
        if self._plan is not None:
            merged[have] = self.old_weight * old[have] + (1.0 - self.old_weight) * chunk[have]
            self._merged_until = t_obs + (np.flatnonzero(have).max() + 1) / self.fps if have.any() else 0.0
        self.chunk_len = len(chunk)
        self._plan, self._t0 = merged, t_obs


class RealTimeChunking(ChunkPolicy):
    name = ChunkPolicyName.RTC

    def __init__(self, fps: float, n_action_steps: int, threshold: float = DEFAULT_REPLAN_THRESHOLD) -> None:
        super().__init__(fps, n_action_steps, threshold)
        self.last_frozen = 0  # frozen actions of the last merge (inference delay in ticks)

    def prefix_at(self, t_obs: float) -> np.ndarray | None:
        """The plan's actions for t_obs + i / fps on (what guided denoising continues); None without a plan."""
        if self._plan is None:
            return None
        old, have = self._old_plan_at(t_obs, self.chunk_len)
        return old[have] if have.any() and have[0] else None

    def accept(self, chunk: np.ndarray, t_obs: float, now: float | None = None) -> None:
        now = t_obs if now is None else now
        chunk = np.asarray(chunk, dtype=np.float64)
        old, have = self._old_plan_at(t_obs, len(chunk))
        merged = chunk.copy()
        delay = min(len(chunk), max(0, math.ceil((now - t_obs) * self.fps - 1e-6)))
        if self._plan is not None and have.any():
            overlap_end = int(np.flatnonzero(have).max()) + 1
            # RTC's prefix weights: 1 for the d frozen actions, then linear decay to 0 at the end of the
            # old plan's overlap (guidance strength -> blend weight, chunk side only).
            weights = np.zeros(len(chunk))
            weights[:delay] = 1.0
            ramp = np.arange(delay, overlap_end)
            if ramp.size:
                weights[ramp] = 1.0 - (ramp - delay + 1) / (overlap_end - delay + 1)
            weights[~have] = 0.0
            merged = weights[:, None] * old + (1.0 - weights[:, None]) * chunk
            self.last_frozen = int(min(delay, have.sum()))
            self._merged_until = t_obs + overlap_end / self.fps
        else:
            self.last_frozen = 0
        self.chunk_len = len(chunk)
        self._plan, self._t0 = merged, t_obs


class TemporalEnsembling(ChunkPolicy):
    name = ChunkPolicyName.TEMPORAL_ENSEMBLING

    def __init__(self, fps: float, n_action_steps: int, threshold: float = DEFAULT_REPLAN_THRESHOLD,
                 coeff: float = 0.01) -> None:
        super().__init__(fps, n_action_steps, threshold)
        self.coeff = coeff
        self._chunks: list[tuple[float, np.ndarray]] = []  # oldest first

    @classmethod
    def create(cls, fps: float, n_action_steps: int, threshold: float, *, blend_old_weight: float,
               ensemble_coeff: float) -> ChunkPolicy:
        return cls(fps, n_action_steps, threshold, ensemble_coeff)

    def clear(self) -> None:
        self._chunks = []

    def accept(self, chunk: np.ndarray, t_obs: float, now: float | None = None) -> None:
        now = t_obs if now is None else now
        chunk = np.asarray(chunk, dtype=np.float64)
        self.chunk_len = len(chunk)
        self._chunks.append((t_obs, chunk))
        self._chunks = [(t, c) for t, c in self._chunks if self._index(now, t) < len(c)]

    def _live(self, now: float) -> list[tuple[int, np.ndarray]]:
        return [(self._index(now, t), c) for t, c in self._chunks if self._index(now, t) < len(c)]

    def due(self, now: float) -> np.ndarray | None:
        live = self._live(now)
        if not live:
            return None
        start_new, newest = live[-1]
        horizon = len(newest) - start_new
        total = np.zeros((horizon, newest.shape[1]))
        weight_sum = np.zeros(horizon)
        rank = np.zeros(horizon)  # per step: how many older predictions came before (ACT's i)
        for start, chunk in live:  # oldest first
            steps = np.arange(horizon)
            idx = start + steps
            ok = idx < len(chunk)
            w = np.exp(-self.coeff * rank[ok])
            total[ok] += w[:, None] * chunk[idx[ok]]
            weight_sum[ok] += w
            rank[ok] += 1
        return total / weight_sum[:, None]

    def ticks_left(self, now: float) -> int:
        live = self._live(now)
        return 0 if not live else len(live[-1][1]) - live[-1][0]

    def chunks_in_use(self, now: float) -> int:
        return len(self._live(now))

    def needs_inference(self, now: float, lead_ticks: int) -> bool:
        return True  # ACT's ensemble predicts every tick; the worker takes the request when it is free


# The registry: every chunk policy by name, in ChunkPolicyName's order.
CHUNK_POLICIES: dict[ChunkPolicyName, type[ChunkPolicy]] = {
    cls.name: cls for cls in (ExecuteKThenReplan, TemporalEnsembling, OverlapBlend, LatestOnly, RealTimeChunking)
}


def chunk_policy_name(name: ChunkPolicyName | str) -> ChunkPolicyName:
    """`name` as a ChunkPolicyName, or a ValueError naming the choices."""
    try:
        return ChunkPolicyName(name)
    except ValueError:
        raise ValueError(f"unknown chunk_policy {name!r}; choose one of {[n.value for n in ChunkPolicyName]}") from None


def make_chunk_policy(name: ChunkPolicyName | str, fps: float, n_action_steps: int,
                      threshold: float = DEFAULT_REPLAN_THRESHOLD, blend_old_weight: float = 0.3,
                      ensemble_coeff: float = 0.01) -> ChunkPolicy:
    return CHUNK_POLICIES[chunk_policy_name(name)].create(
        fps, n_action_steps, threshold, blend_old_weight=blend_old_weight, ensemble_coeff=ensemble_coeff)
