"""What a policy checkpoint holds and how every runtime describes it.

A checkpoint is LeRobot's `pretrained_model` folder plus our feature specs (`koch_features.json`:
dtype, shape and joint names of the policy's inputs and action), so the robot knows which joint each
action column drives and at what size each camera was recorded. `CheckpointInfo` reads the same
properties for the PyTorch and the onnxruntime runtime alike.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lerobot.configs.policies import PreTrainedConfig

# LeRobot's checkpoint layout: <output_dir>/checkpoints/<step>/pretrained_model/{config.json,
# model.safetensors, policy_preprocessor.json, policy_postprocessor.json, *.safetensors}.
from koch_common.checkpoint_layout import PRETRAINED_MODEL_DIR  # noqa: F401 (re-exported)
from koch_runtime.observation import ACTION_KEY, ObservationChecker, PolicyInputError

# Policy types conditioned on a task text (their preprocessor tokenises it).
LANGUAGE_POLICY_TYPES = ("smolvla", "pi0", "pi05")
# Flow-matching policies: RTC's guided denoising applies (lerobot.policies.rtc).
FLOW_MATCHING_POLICY_TYPES = ("smolvla", "pi0", "pi05")
# Their config field holding the denoising (integration) steps per inference.
FLOW_STEPS_FIELDS = {"smolvla": "num_steps", "pi0": "num_inference_steps", "pi05": "num_inference_steps"}

# Our addition to that layout: the dataset's feature specs (dtype, shape, joint names) for the
# policy's inputs and action, so the robot knows which joint each action column drives.
FEATURE_SPECS_FILE = "koch_features.json"
REQUIRED_CHECKPOINT_FILES = ("config.json", "model.safetensors", "policy_preprocessor.json",
                             "policy_postprocessor.json", FEATURE_SPECS_FILE)


def resolve_pretrained_dir(checkpoint_dir: Path | str) -> Path:
    """The folder holding config.json etc.: `checkpoint_dir` or its `pretrained_model` child."""
    path = Path(checkpoint_dir).expanduser()
    if not (path / "config.json").is_file() and (path / PRETRAINED_MODEL_DIR).is_dir():
        path = path / PRETRAINED_MODEL_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist; pass <run>/checkpoints/last")
    missing = [name for name in REQUIRED_CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a complete policy checkpoint: missing {missing}. Pass a "
            f"<output_dir>/checkpoints/<step> (or .../last) folder written by the `train` command"
        )
    return path.resolve()


def read_feature_specs(pretrained_dir: Path) -> dict[str, dict[str, Any]]:
    """The checkpoint's dataset feature specs ({dtype, shape, names, resize, crop, kind} per key)."""
    specs: dict[str, dict[str, Any]] = json.loads((pretrained_dir / FEATURE_SPECS_FILE).read_text(encoding="utf-8"))
    return specs


def write_feature_specs(pretrained_dir: Path, feature_specs: dict[str, dict[str, Any]]) -> None:
    (pretrained_dir / FEATURE_SPECS_FILE).write_text(json.dumps(feature_specs, indent=2), encoding="utf-8")


class CheckpointInfo:
    """What every runtime reads from a checkpoint's config.json and feature specs.

    Shared by PolicyRuntime (PyTorch) and OnnxRuntime so both describe a checkpoint the same way;
    subclasses provide `config` (LeRobot's PreTrainedConfig) and `feature_specs`.
    """

    config: PreTrainedConfig
    feature_specs: dict[str, dict[str, Any]]
    # Seconds the model itself took in the last predict_chunk (the forward, or every ONNX session
    # run; the ACT graph's run includes its traced pre/post-processing); the rest of predict_chunk
    # is Python pre/post-processing. Latency figures split on it.
    last_forward_s: float = float("nan")
    # The CPUs the thread calling predict_chunk should run on (OnnxRuntime: the core its pinned pool
    # leaves free, see koch_runtime.threads.ThreadLayout); None: wherever the OS puts it.
    caller_cpus: frozenset[int] | None = None
    # The instruction a language-conditioned policy acts on (the node's `task` parameter and topic).
    task: str | None = None

    @property
    def policy_type(self) -> str:
        return str(self.config.type)

    @property
    def supports_guidance(self) -> bool:
        """Whether predict_guided steers the model's denoising (a flow-matching policy under PyTorch)."""
        return False

    def predict_guided(self, observation: Mapping[str, np.ndarray], prefix: np.ndarray,
                       inference_delay: int) -> np.ndarray:
        raise NotImplementedError(f"{self.policy_type} under {type(self).__name__} does not guide its denoising "
                                  "towards a prefix; only flow-matching policies run with PyTorch do")

    @property
    def flow_steps(self) -> int | None:
        """A flow-matching policy's integration steps per inference; None for other families."""
        field = FLOW_STEPS_FIELDS.get(self.policy_type)
        return None if field is None else int(getattr(self.config, field))

    @flow_steps.setter
    def flow_steps(self, steps: int) -> None:
        """Fewer steps infer faster with coarser actions; the model is the same (flow matching integrates a
        learnt velocity field, whose step count is free at inference)."""
        field = FLOW_STEPS_FIELDS.get(self.policy_type)
        if field is None:
            raise ValueError(f"flow_steps applies to flow-matching policies ({', '.join(FLOW_STEPS_FIELDS)}); "
                             f"this checkpoint is {self.policy_type}: leave it 0")
        if steps < 1:
            raise ValueError(f"flow_steps must be >= 1, got {steps}")
        setattr(self.config, field, int(steps))

    @property
    def needs_task(self) -> bool:
        """Whether the policy reads a task instruction (the VLAs): it never runs without one."""
        return self.policy_type in LANGUAGE_POLICY_TYPES

    def with_task(self, batch: dict[str, Any]) -> dict[str, Any]:
        """`batch` with the instruction a language policy reads (PolicyInputError when none is set)."""
        if self.needs_task:
            if not self.task:
                raise PolicyInputError(f"{self.policy_type} acts on a task instruction and none is set: give the "
                                       "policy node's `task` parameter or publish one on its ~/task topic")
            batch["task"] = self.task
        return batch

    @property
    def input_features(self) -> dict[str, Any]:
        """Feature key -> PolicyFeature (type, shape; images channel-first)."""
        return dict(self.config.input_features)

    @functools.cached_property
    def check_observation(self) -> ObservationChecker:
        """This checkpoint's `ObservationChecker` (its layouts worked out once, not per inference)."""
        return ObservationChecker(self.config.input_features, self.feature_specs)

    @property
    def action_names(self) -> list[str]:
        """Name of each action column (the dataset's joint names), in order."""
        names = self.feature_specs[ACTION_KEY].get("names")
        return list(names) if names else [f"action_{i}" for i in range(self.action_dim)]

    def feature_names(self, key: str) -> list[str] | None:
        """The dataset's names for feature `key` (e.g. joint order of observation.state)."""
        spec = self.feature_specs.get(key)
        return list(spec["names"]) if spec and spec.get("names") is not None else None

    @property
    def action_dim(self) -> int:
        return int(self.config.output_features[ACTION_KEY].shape[0])

    @property
    def chunk_size(self) -> int:
        """Length of the chunk predict_chunk returns (ACT: chunk_size; diffusion: n_action_steps)."""
        return int(getattr(self.config, "chunk_size", None) or self.config.n_action_steps)

    @property
    def n_action_steps(self) -> int:
        return int(self.config.n_action_steps)
