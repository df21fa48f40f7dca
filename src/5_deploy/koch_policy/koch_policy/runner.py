"""The policy node's ROS-free core: observation assembly, inference worker, safe chunks.

Messages arrive through `push` into the shared resampler's StreamBuffers (the converter
builds dataset frames with the same buffers). Each 30 Hz `tick` samples every stream at
"now": a stale or missing stream holds the measured position; otherwise the due part of
the current chunk is passed through the shared safety limits. Inference runs on a worker
thread, so a slow model never blocks a tick; it is requested early by the measured latency.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from koch_common.resample import StreamBuffer, StreamSpec
from koch_common.safety import SafetyLimits
from koch_policy.chunk_queue import ChunkQueue

STATE_FEATURE = "observation.state"


@dataclass
class TickOutput:
    kind: str  # "chunk", "hold" or "wait"
    positions: np.ndarray | None  # (K, J) safe position targets for now + k / fps
    reason: str = ""


class PolicyRunner:
    def __init__(
        self,
        predict: Callable[[dict[str, np.ndarray]], np.ndarray],
        streams: Mapping[str, StreamSpec],
        limits: SafetyLimits,
        fps: float,
        n_action_steps: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if STATE_FEATURE not in streams:
            raise ValueError(f"the feature mapping must provide {STATE_FEATURE!r} for the measured position")
        self.predict = predict
        self.buffers = {name: StreamBuffer(spec, maxlen=64) for name, spec in streams.items()}
        self.limits = limits
        self.fps = fps
        self.queue = ChunkQueue(fps, n_action_steps)
        self.clock = clock
        self.latencies_s: deque[float] = deque(maxlen=1000)
        self._lock = threading.Lock()
        self._request: tuple[dict[str, np.ndarray], float] | None = None
        self._busy = False
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self.last_error = ""
        self._worker = threading.Thread(target=self._work, name="policy-inference", daemon=True)
        self._worker.start()

    # -- observations ---------------------------------------------------------------
    def push(self, feature: str, stamp_s: float, value: np.ndarray) -> None:
        with self._lock:
            self.buffers[feature].push(stamp_s, value)

    def observe(self, t: float) -> tuple[dict[str, np.ndarray] | None, list[str]]:
        """Every feature's value at t, or None and the names of missing/stale streams."""
        observation: dict[str, np.ndarray] = {}
        bad: list[str] = []
        with self._lock:
            for name, buffer in self.buffers.items():
                sample = buffer.sample(t)
                if sample is None or sample.stale:
                    bad.append(name)
                else:
                    observation[name] = sample.value
        return (None if bad else observation), bad

    def measured_position(self) -> np.ndarray | None:
        with self._lock:
            buffer = self.buffers[STATE_FEATURE]
            return None if buffer.last_stamp is None else buffer.sample(buffer.last_stamp).value

    # -- control tick ---------------------------------------------------------------
    def lead_ticks(self) -> int:
        latency = max(self.latencies_s) if self.latencies_s else 0.1
        return math.ceil(latency * self.fps) + 1

    def tick(self, now: float) -> TickOutput:
        measured = self.measured_position()
        if measured is None:
            return TickOutput("wait", None, "no joint state yet")
        observation, bad = self.observe(now)
        if observation is None:
            self.queue.clear()
            self.limits.interventions["stale_observation"] += 1
            return TickOutput("hold", self.limits.filter_point(measured, measured)[None],
                              f"stale or missing: {', '.join(bad)}")
        if self.queue.needs_inference(now, self.lead_ticks()):
            self._request_inference(observation, now)
        due = self.queue.due(now)
        if due is None:
            return TickOutput("hold", self.limits.filter_point(measured, measured)[None], "waiting for a chunk")
        return TickOutput("chunk", self.limits.filter_chunk(due, measured, 1.0 / self.fps))

    def reset(self) -> None:
        with self._lock:
            self.queue.clear()
            self._request = None

    # -- inference worker -------------------------------------------------------------
    def _request_inference(self, observation: dict[str, np.ndarray], t_obs: float) -> None:
        with self._wake:
            if not self._busy:
                self._request = (observation, t_obs)
                self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._request is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                observation, t_obs = self._request
                self._request = None
                self._busy = True
            try:
                started = time.perf_counter()
                chunk = self.predict(observation)
                self.latencies_s.append(time.perf_counter() - started)
                with self._lock:
                    self.queue.accept(chunk, t_obs)
            except Exception as err:  # noqa: BLE001 - a failed inference holds, never crashes the loop
                self.last_error = f"{type(err).__name__}: {err}"
            finally:
                with self._wake:
                    self._busy = False

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._worker.join(timeout=5.0)

    def latency_percentiles_ms(self) -> tuple[float, float]:
        if not self.latencies_s:
            return math.nan, math.nan
        values = np.array(self.latencies_s) * 1e3
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))
