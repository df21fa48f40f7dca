"""Execute-k-then-replan: which actions of the latest chunk are due, and when to replan.

A chunk predicted from the observation at time t_obs holds the actions for
t_obs + i / fps. The queue serves the actions from "now" up to the chunk's first
`n_action_steps`, and asks for the next inference early enough that it lands before
those run out (`lead_ticks`, from the measured inference latency).
"""

from __future__ import annotations

import math

import numpy as np


class ChunkQueue:
    def __init__(self, fps: float, n_action_steps: int) -> None:
        self.fps = fps
        self.n_action_steps = n_action_steps
        self._chunk: np.ndarray | None = None
        self._t_obs = 0.0

    def clear(self) -> None:
        self._chunk = None

    def accept(self, chunk: np.ndarray, t_obs: float) -> None:
        self._chunk = np.asarray(chunk)
        self._t_obs = t_obs

    def _index(self, now: float) -> int:
        return max(0, int(math.floor((now - self._t_obs) * self.fps + 1e-6)))

    def due(self, now: float) -> np.ndarray | None:
        """Actions from `now` to the end of the executed part of the chunk; None when spent."""
        if self._chunk is None:
            return None
        start = self._index(now)
        end = min(self.n_action_steps, len(self._chunk))
        return self._chunk[start:end] if start < end else None

    def ticks_left(self, now: float) -> int:
        if self._chunk is None:
            return 0
        return max(0, min(self.n_action_steps, len(self._chunk)) - self._index(now))

    def needs_inference(self, now: float, lead_ticks: int) -> bool:
        return self.ticks_left(now) <= lead_ticks
