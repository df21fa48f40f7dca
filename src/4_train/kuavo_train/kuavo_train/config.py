"""Training configuration: YAML under config/train/ plus `key.sub=value` overrides."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from koch_common.config import ConfigError, load_config


@dataclass
class DatasetConfig:
    repo_id: str
    # Local LeRobot v3.0 dataset folder (holds meta/info.json); relative paths are from the cwd.
    root: str
    # Subset of episode indices to train on; null = all.
    episodes: list[int] | None = None
    # LeRobot video decoder ('torchcodec' or 'pyav'); null = LeRobot's default.
    video_backend: str | None = None


@dataclass
class PolicySection:
    type: str = "act"
    # Dataset features fed to the policy; 'action' is always the output.
    input_features: list[str] = field(
        default_factory=lambda: ["observation.state", "observation.images.head"]
    )
    # Passed as keyword arguments to LeRobot's config class for `type` (e.g. ACTConfig).
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    dataset: DatasetConfig
    output_dir: str
    policy: PolicySection = field(default_factory=PolicySection)
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip_norm: float = 10.0
    warmup_steps: int = 0
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    # 0 = only the final checkpoint.
    save_every: int = 0
    device: str = "cpu"
    # torch intra-op threads; null = torch's default (one per core).
    torch_threads: int | None = None
    # Allow writing into an output_dir that already holds checkpoints.
    overwrite: bool = False

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "log_every": self.log_every}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        non_negative = {
            "warmup_steps": self.warmup_steps, "num_workers": self.num_workers,
            "save_every": self.save_every, "lr": self.lr, "weight_decay": self.weight_decay,
            "grad_clip_norm": self.grad_clip_norm,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_train_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> TrainConfig:
    """`path` is absolute, relative to the cwd, or relative to config/ (e.g. train/act_sim.yaml)."""
    return load_config(TrainConfig, path, overrides)
