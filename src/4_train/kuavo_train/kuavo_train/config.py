"""Training configuration: YAML under config/train/ plus `key.sub=value` overrides.

A YAML file may start from another with `base: train/other.yaml`; the child's keys are merged
over the base's. Merges that cannot mean what the author wants are refused by name (see
`merge_with_base`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from koch_common.config import (
    ConfigError,
    from_dict,
    merge,
    parse_overrides,
    read_yaml,
    require,
    resolve_config_path,
)
from kuavo_train.augment import AugmentConfig

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("constant", "cosine")


@dataclass
class DatasetConfig:
    repo_id: str
    # Local LeRobot v3.0 dataset folder (holds meta/info.json); relative paths are from the cwd.
    root: str
    # Which episodes to use at all: null = every one; N = the first N; "a:b" = indices a..b-1;
    # [i, j, ...] = exactly those.
    episodes_to_use: int | str | list[int] | None = None
    # Held-out (validation / offline-evaluation) episodes taken from episodes_to_use: N = N episodes
    # drawn with `seed`; [i, j] = exactly those. 0 = no validation split.
    val_episodes: int | list[int] = 0
    # LeRobot video decoder ('torchcodec' or 'pyav'); null = LeRobot's default.
    video_backend: str | None = None
    # [height, width] every camera image is resized to before the policy sees it; null = as recorded.
    # The checkpoint records it and the robot's runtime applies the same resize.
    resize: list[int] | None = None
    # [height, width] random crop in training (centre crop at eval); null = none. Applied after resize.
    crop: list[int] | None = None
    # Decode every video frame of the selected episodes once into a uint8 cache on disk (memmap) and
    # read samples from it instead of decoding video per sample: removes the data loader's decode CPU.
    # Costs frames x C x H x W bytes per camera; built before the first step, reused while the dataset
    # is unchanged (resume included).
    frame_cache: bool = False
    # Where the cache lives; null = <output_dir>/frame_cache. Point it at a fast local disk with room.
    frame_cache_dir: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("resize", self.resize), ("crop", self.crop)):
            if value is not None and (len(value) != 2 or min(value) <= 0):
                raise ConfigError(f"dataset.{name} must be [height, width] of positive ints, got {value}")


@dataclass
class LoaderConfig:
    """torch DataLoader tuning; the defaults suit a GPU box (pin memory only matters with CUDA)."""
    num_workers: int = 0
    prefetch_factor: int = 2
    pin_memory: bool = True
    persistent_workers: bool = True

    def __post_init__(self) -> None:
        require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        require(self.prefetch_factor > 0, f"prefetch_factor must be > 0, got {self.prefetch_factor}")


@dataclass
class PolicySection:
    type: str = "act"
    # Dataset features fed to the policy; 'action' is always the output.
    input_features: list[str] = field(
        default_factory=lambda: ["observation.state", "observation.images.head"]
    )
    # Passed as keyword arguments to LeRobot's config class for `type` (e.g. ACTConfig).
    overrides: dict[str, Any] = field(default_factory=dict)
    # SmolVLA / pi0: a LOCAL folder holding pretrained weights to fine-tune (never downloaded).
    pretrained_path: str | None = None
    # SmolVLA from scratch (no pretrained_path): sizes of the backbone `train` builds into
    # <output_dir>/vlm_backbone (koch_runtime.vlm_backbone.SmolVLMBackbone; {} = its defaults).
    vlm_backbone: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    dataset: DatasetConfig
    output_dir: str
    policy: PolicySection = field(default_factory=PolicySection)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    # Optimiser steps (each one is grad_accum_steps micro-batches of batch_size).
    steps: int = 1000
    batch_size: int = 16
    grad_accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip_norm: float = 10.0
    warmup_steps: int = 0
    # After warm-up: 'constant' or 'cosine' decay to lr * min_lr_ratio at `steps`.
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    # 'fp32', 'bf16' (autocast; CPU or GPU) or 'fp16' (autocast + GradScaler; GPU).
    precision: str = "fp32"
    # Exponential moving average of the weights (0 = off); the checkpoint's pretrained_model holds
    # the EMA weights when on, since those are what should run on the robot.
    ema_decay: float = 0.0
    seed: int = 0
    # torch.use_deterministic_algorithms (bit-exact reruns; slower on GPU).
    deterministic: bool = False
    # Kept for older configs: same as loader.num_workers when set.
    num_workers: int | None = None
    log_every: int = 10
    # 0 = only the final checkpoint.
    save_every: int = 0
    # Keep only the newest K step checkpoints (0 = keep all).
    keep_last: int = 0
    # Validation loss on the held-out episodes every N steps (0 = never); needs dataset.val_episodes.
    val_every: int = 0
    val_batches: int = 4
    device: str = "cpu"
    # torch intra-op threads; null = torch's default (one per core).
    torch_threads: int | None = None
    # Allow writing into an output_dir that already holds checkpoints.
    overwrite: bool = False
    # Continue from <output_dir>/checkpoints/last (model, optimiser, scheduler, scaler, EMA, RNG, data order).
    resume: bool = False
    # Stop (after saving a checkpoint) once this many steps ran in this process; 0 = run to `steps`.
    # For time-sliced jobs on shared GPU boxes: the next job resumes.
    stop_after: int = 0
    # At the end of the run (step == steps), export the final checkpoint to ONNX beside it and check it
    # against PyTorch (kuavo_export); the robot then runs the export by default. act, diffusion and
    # rgbd_diffusion only; other types deploy the PyTorch checkpoint.
    export_onnx: bool = True

    def __post_init__(self) -> None:
        # Written so that NaN fails every check (`require(x >= 0)`, not `x < 0`): a TrainConfig built in
        # Python, or read back from a checkpoint, is held to the same ranges as one loaded from YAML.
        positive = {"steps": self.steps, "batch_size": self.batch_size, "log_every": self.log_every,
                    "grad_accum_steps": self.grad_accum_steps, "val_batches": self.val_batches}
        for name, count in positive.items():
            require(count > 0, f"{name} must be > 0, got {count}")
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr}")
        non_negative = {
            "warmup_steps": self.warmup_steps, "save_every": self.save_every, "weight_decay": self.weight_decay,
            "grad_clip_norm": self.grad_clip_norm, "keep_last": self.keep_last, "val_every": self.val_every,
            "stop_after": self.stop_after,
        }
        for name, value in non_negative.items():
            require(value >= 0 and math.isfinite(value), f"{name} must be a finite number >= 0, got {value}")
        require(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        require(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        require(self.torch_threads is None or self.torch_threads > 0,
                f"torch_threads must be > 0 (or null for torch's default), got {self.torch_threads}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.num_workers is not None:
            require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
            self.loader.num_workers = self.num_workers
        if self.resume and self.overwrite:
            raise ConfigError("resume=true and overwrite=true contradict each other; pick one")
        if self.val_every and not self.dataset.val_episodes:
            raise ConfigError("val_every > 0 needs held-out episodes: set dataset.val_episodes")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys whose value, if a child config changes it, invalidates the base's settings under another key.
_DEPENDENT_KEYS = {("policy", "type"): ("policy", "overrides")}


def merge_with_base(path: str | os.PathLike[str], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The YAML at `path` merged over its `base:` chain (child wins), with conflicts refused.

    Refused: a child that replaces a mapping with a scalar (or the reverse), and a child that
    changes policy.type while inheriting the base's policy.overrides, which belong to the old type.
    """
    resolved = str(resolve_config_path(path))
    if resolved in seen:
        raise ConfigError(f"config base cycle: {' -> '.join([*seen, resolved])}")
    data = read_yaml(path)
    base_path = data.pop("base", None)
    if base_path is None:
        return data
    base = merge_with_base(base_path, (*seen, resolved))
    _check_conflicts(base, data, [], str(path), str(base_path))
    replaced = []
    for (section, key), (dep_section, dep_key) in _DEPENDENT_KEYS.items():
        child_value = data.get(section, {}).get(key)
        base_value = base.get(section, {}).get(key)
        if child_value is not None and base_value is not None and child_value != base_value:
            if dep_key in data.get(dep_section, {}):
                replaced.append((dep_section, dep_key))  # the child's settings replace, not extend, the base's
            elif base.get(dep_section, {}).get(dep_key):
                raise ConfigError(
                    f"{path} sets {section}.{key}={child_value!r} but its base {base_path} has {section}.{key}="
                    f"{base_value!r} with {dep_section}.{dep_key} for that type, which would be inherited; "
                    f"give {path} its own {dep_section}.{dep_key} (or {{}}) for {child_value!r}"
                )
    merged = merge(base, data)
    for dep_section, dep_key in replaced:
        merged[dep_section][dep_key] = data[dep_section][dep_key]
    return merged


def _check_conflicts(base: Any, child: Any, where: list[str], child_path: str, base_path: str) -> None:
    if not isinstance(child, dict) or not isinstance(base, dict):
        return
    for key, value in child.items():
        if key not in base:
            continue
        key_path = ".".join([*where, key])
        if isinstance(value, dict) != isinstance(base[key], dict) and value is not None:
            raise ConfigError(
                f"{child_path}: {key_path} is a {type(value).__name__} but base {base_path} has a "
                f"{type(base[key]).__name__} there; make them the same kind"
            )
        # policy.overrides is a free-form mapping: nothing to check inside.
        if key_path != "policy.overrides":
            _check_conflicts(base[key], value, [*where, key], child_path, base_path)


def load_train_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> TrainConfig:
    """`path` is absolute, relative to the cwd, or relative to config/ (e.g. train/act_sim.yaml)."""
    data = merge(merge_with_base(path), parse_overrides(overrides))
    return from_dict(TrainConfig, data, where=str(resolve_config_path(path).name))
