"""The interface every policy runtime offers its callers (the policy node and runner, evaluation,
the benchmarks), whichever engine runs the model: PolicyRuntime (PyTorch) and OnnxRuntime both
satisfy it, and `koch_runtime.factory.load_runtime` returns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from koch_runtime.observation import ObservationChecker


class ChunkPredictor(Protocol):
    """A loaded policy checkpoint that turns one robot observation into a chunk of actions."""

    # Seconds the model itself took in the last predict_chunk (the rest is pre/post-processing).
    last_forward_s: float
    # CPUs the thread calling predict_chunk should run on; None: wherever the OS puts it.
    caller_cpus: frozenset[int] | None
    # The instruction a language-conditioned policy acts on (None: none given).
    task: str | None

    @property
    def needs_task(self) -> bool:
        """Whether the policy reads a task instruction (the VLAs): predict_chunk refuses without one."""
        ...

    @property
    def flow_steps(self) -> int | None:
        """A flow-matching policy's integration steps per inference (settable); None for other families."""
        ...

    @flow_steps.setter
    def flow_steps(self, steps: int) -> None: ...

    def predict_chunk(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """Actions (chunk_size, action_dim) float32 in robot units for one observation
        (images uint8 HxWxC as recorded, everything else float32); PolicyInputError if it does not fit."""
        ...

    @property
    def supports_guidance(self) -> bool:
        """Whether `predict_guided` steers the denoising towards a prefix (flow-matching policies)."""
        ...

    def predict_guided(self, observation: Mapping[str, np.ndarray], prefix: np.ndarray,
                       inference_delay: int) -> np.ndarray:
        """`predict_chunk` whose chunk continues `prefix`: the current plan's actions for the observation's time
        on (t_obs + i / fps, robot units), the first `inference_delay` of which will have run by the time the
        new chunk lands (RTC's guided denoising)."""
        ...

    def reset(self) -> None:
        """Forget per-episode state (observation history, stateful processors)."""
        ...

    @property
    def n_action_steps(self) -> int:
        """How many actions of a chunk the policy was trained to execute before predicting again."""
        ...

    @property
    def chunk_size(self) -> int:
        """Length of the chunk predict_chunk returns."""
        ...

    @property
    def action_names(self) -> list[str]:
        """Name of each action column (the dataset's joint names), in order."""
        ...

    def feature_names(self, key: str) -> list[str] | None:
        """The dataset's names for feature `key` (e.g. the joint order of observation.state)."""
        ...

    @property
    def input_features(self) -> dict[str, Any]:
        """Feature key -> LeRobot PolicyFeature (type, shape; images channel-first)."""
        ...

    @property
    def policy_type(self) -> str:
        """The checkpoint's LeRobot policy type (act, diffusion, rgbd_diffusion, ...)."""
        ...

    @property
    def check_observation(self) -> ObservationChecker:
        """The checker predict_chunk runs first (callable; `.batch` gives the dataset's tensors)."""
        ...
