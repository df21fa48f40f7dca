"""`train --config train/act_sim.yaml [key.sub=value ...]`: train a LeRobot policy offline.

The policy, its normalising processors and the checkpoint format come from koch_runtime, the
same code the robot's policy node runs.

Multi-GPU: the same module under accelerate (`accelerate launch -m kuavo_train.train --config ...`)
or torchrun; each process trains on its share of every global batch, rank 0 logs and saves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from koch_common.checkpoint_layout import TRAIN_CONFIG_FILE
from koch_common.config import ConfigError
from koch_common.processes import process_alive
from koch_runtime.build import build_policy
from koch_runtime.checkpoint import PRETRAINED_MODEL_DIR
from koch_runtime.checkpoint_trust import read_json_object
from koch_runtime.lerobot_compat import is_depth_map
from koch_runtime.observation import DEPTH_KIND, IMAGE_PREFIX
from koch_runtime.torch_runtime import PolicyRuntime
from koch_runtime.vlm_backbone import (
    BACKBONE_DIR,
    PI0,
    SMOLVLA,
    TOKENIZER_DIR,
    SmolVLMBackbone,
    build_backbone,
    build_tokenizer,
    smolvla_overrides,
)
from kuavo_train.config import TrainConfig, load_train_config
from kuavo_train.data import (
    ResumableBatchSampler,
    TransformedDataset,
    load_metadata,
    make_loader,
    open_dataset,
    select_episodes,
    split_episodes,
)
from kuavo_train.errors import WRITE_FAILURES, OutputError, check_writable, is_write_failure, reason
from kuavo_train.export import export_after_training
from kuavo_train.frame_cache import CachedFramesDataset, FrameCache
from kuavo_train.state import EMA, STATE_DIR, load_training_state, save_training_state

CHECKPOINTS_DIR = "checkpoints"
LAST_LINK = "last"
LOG_FILE = "train_log.jsonl"
# Config sections that must match the checkpoint's when resuming (they define the model and data).
RESUME_MUST_MATCH = ("dataset", "policy", "batch_size", "grad_accum_steps", "seed", "ema_decay", "precision")
# dataset keys that change only where the frames come from, not which: free to change on resume.
RESUME_FREE_DATASET_KEYS = ("frame_cache", "frame_cache_dir")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def image_transforms_for(cfg: TrainConfig, features: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per camera feature: resize / crop from the config and whether it is RGB or depth."""
    out = {}
    for key in cfg.policy.input_features:
        if key.startswith(IMAGE_PREFIX) and key in features:
            kind = DEPTH_KIND if is_depth_map(features[key]) else "rgb"
            out[key] = {"resize": cfg.dataset.resize, "crop": cfg.dataset.crop, "kind": kind}
    return out


def build_runtime(cfg: TrainConfig, device: str | None = None) -> PolicyRuntime:
    """A fresh policy + processors for `cfg`, normalising with the dataset's stats."""
    meta = load_metadata(cfg.dataset)
    overrides = dict(cfg.policy.overrides)
    if cfg.policy.type == SMOLVLA and cfg.policy.pretrained_path is None and "vlm_model_name" not in overrides:
        # From scratch: a backbone sized by policy.vlm_backbone, its vocabulary the dataset's task texts.
        spec = SmolVLMBackbone.from_mapping(cfg.policy.vlm_backbone)
        backbone = build_backbone(Path(cfg.output_dir) / BACKBONE_DIR, [str(t) for t in meta.tasks.index], spec)
        overrides = {**smolvla_overrides(backbone, spec), **overrides}
    tokenizer_dir = None
    if cfg.policy.type == PI0 and cfg.policy.pretrained_path is None:
        # From scratch: LeRobot's PaliGemma sizes, a word-level tokenizer of the dataset's task texts.
        tokenizer_dir = str(build_tokenizer(Path(cfg.output_dir) / TOKENIZER_DIR, [str(t) for t in meta.tasks.index]))
    return build_policy(
        cfg.policy.type,
        overrides,
        meta.features,
        meta.stats,
        cfg.policy.input_features,
        device=device or cfg.device,
        image_transforms=image_transforms_for(cfg, meta.features),
        pretrained_path=cfg.policy.pretrained_path,
        tokenizer_dir=tokenizer_dir,
    )


def make_optimizer(runtime: PolicyRuntime, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in runtime.policy.parameters() if p.requires_grad]
    # The fused kernel updates every parameter in one pass; on CPU torch's default per-tensor loop
    # takes a sizeable share of a whole training step.
    # GradScaler steps fused optimisers natively (fp16 on CUDA).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the base lr after `step` optimiser steps: linear warm-up, then constant or cosine."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg_or_warmup: TrainConfig | int) -> Any:
    if isinstance(cfg_or_warmup, int):
        warmup, total, schedule, ratio = cfg_or_warmup, 1, "constant", 0.0
    else:
        warmup, total = cfg_or_warmup.warmup_steps, cfg_or_warmup.steps
        schedule, ratio = cfg_or_warmup.schedule, cfg_or_warmup.min_lr_ratio
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, schedule, ratio))


def autocast_context(precision: str, device: str) -> Any:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def train_step(
    runtime: PolicyRuntime,
    batch: dict[str, Any] | list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    grad_clip_norm: float,
    *,
    precision: str = "fp32",
    scaler: Any = None,
    model: torch.nn.Module | None = None,
    backward: Any = None,
) -> dict[str, float]:
    """One optimisation step on one raw batch or a list of micro-batches (gradient accumulation).

    `model` is the (possibly DDP-wrapped) policy to call; `backward` the accelerate backward.
    Returns the mean loss, loss terms, grad norm and lr.
    """
    micro_batches = batch if isinstance(batch, list) else [batch]
    model = model if model is not None else runtime.policy
    device = str(next(runtime.policy.parameters()).device)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses: list[float] = []
    terms_sum: dict[str, float] = {}
    for i, micro in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # DDP: all-reduce gradients only on the last micro-batch.
        no_sync = getattr(model, "no_sync", None)
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            processed = runtime.preprocessor(micro)
            with autocast_context(precision, device):
                loss, terms = model(processed) if model is not runtime.policy else model.forward(processed)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()}; lower lr or raise warmup_steps")
            scaled = loss / len(micro_batches)
            if scaler is not None and scaler.is_enabled():
                scaled = scaler.scale(scaled)
            if backward is not None:
                backward(scaled)
            else:
                scaled.backward()
        losses.append(float(loss.detach()))
        for k, v in (terms or {}).items():
            if isinstance(v, (int, float)):
                terms_sum[k] = terms_sum.get(k, 0.0) + float(v) / len(micro_batches)
    if scaler is not None and scaler.is_enabled():
        scaler.unscale_(optimizer)
    max_norm = grad_clip_norm if grad_clip_norm > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(runtime.policy.parameters(), max_norm)
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    out = {"loss": float(np.mean(losses)), "grad_norm": float(grad_norm), "lr": optimizer.param_groups[0]["lr"]}
    out.update(terms_sum)
    return out


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"{step:06d}"


def staging_name(kind: str, pid: int | None = None, step: int | None = None) -> str:
    """Hidden names in checkpoints/ for what a save writes before it is in place; each ends with the PID
    of the process writing it, so a later run can tell a dead run's leftovers from a live run's work."""
    pid = os.getpid() if pid is None else pid
    return f".{kind}-{step:06d}-{pid}" if step is not None else f".{kind}-{pid}"


# .tmp-<step>-<pid>: a checkpoint being written; .old-<step>-<pid>: one being replaced; .last-<pid>: the
# new `last` link before it is swapped in.
STAGING_PATTERN = re.compile(r"^\.(tmp|old|last)-(?:(\d+)-)?(\d+)$")


def save_checkpoint(
    runtime: PolicyRuntime, cfg: TrainConfig, step: int, training_state: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write `<output_dir>/checkpoints/<step>/{pretrained_model,training_state}` and point `last` at it.

    pretrained_model holds the EMA weights when EMA is on (what the robot should run);
    training_state the raw weights and everything else needed to resume. Everything is written
    into a hidden staging folder (`.tmp-<step>-<pid>`) first and renamed into place, so an interrupted
    save leaves either the previous checkpoint set or the complete new one. A save that fails (disk
    full, folder read-only) or is interrupted removes its staging folder and raises an OutputError
    naming the folder and the fix; a process killed outright leaves it for the next run to sweep
    (`sweep_staging`). Older step folders beyond keep_last go. `run`: how the checkpoint was made
    (episodes, training wall time, device), saved with its config for results tables.
    """
    checkpoints = Path(cfg.output_dir) / CHECKPOINTS_DIR
    final = checkpoint_dir(Path(cfg.output_dir), step)
    staging = checkpoints / staging_name("tmp", step=step)
    link_tmp = checkpoints / staging_name(LAST_LINK)
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        write_checkpoint(staging, runtime, cfg, step, training_state, run)
        publish_checkpoint(staging, final, link_tmp)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            link_tmp.unlink(missing_ok=True)
        if not isinstance(exc, WRITE_FAILURES):
            raise
        last = checkpoints / LAST_LINK
        if last.is_symlink():
            previous, resume = f"{last} still points to {os.readlink(last)}", "continue with resume=true"
        else:
            previous, resume = "no checkpoint was saved before", "run again"
        raise OutputError(
            f"cannot save checkpoint {final.name} in {checkpoints}: {reason(exc)}; its staging folder was removed "
            f"and {previous}. Free space on that disk (or make the folder writable, or set another output_dir) and "
            f"{resume}"
        ) from None
    if cfg.keep_last > 0:
        steps = sorted(p for p in checkpoints.iterdir() if p.name.isdigit() and not p.is_symlink())
        for old in steps[:-cfg.keep_last]:
            shutil.rmtree(old)
    return final


def write_checkpoint(staging: Path, runtime: PolicyRuntime, cfg: TrainConfig, step: int,
                     training_state: dict[str, Any] | None, run: dict[str, Any] | None = None) -> None:
    """The checkpoint's files, into `staging`."""
    pretrained = staging / PRETRAINED_MODEL_DIR
    ema: EMA | None = (training_state or {}).get("ema")
    raw = ema.swap_into(runtime.policy) if ema is not None else None
    try:
        runtime.save(pretrained)
    finally:
        if raw is not None:
            runtime.policy.load_state_dict(raw)
    (pretrained / TRAIN_CONFIG_FILE).write_text(
        json.dumps({"step": step, "config": cfg.to_dict(), "run": run or {}}, indent=2), encoding="utf-8"
    )
    if training_state is not None:
        save_training_state(staging / STATE_DIR, model=runtime.policy, **training_state)


def publish_checkpoint(staging: Path, final: Path, link_tmp: Path) -> None:
    """Rename the complete `staging` folder to `final` and swap `last` to it (each step one rename)."""
    if final.exists():  # the same step saved again: set the old one aside, drop it once replaced
        aside = final.parent / staging_name("old", step=int(final.name))
        os.replace(final, aside)
        os.replace(staging, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, final)
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name, target_is_directory=True)
    os.replace(link_tmp, final.parent / LAST_LINK)


def sweep_staging(checkpoints: Path) -> list[str]:
    """Remove what interrupted saves left in `checkpoints` (staging folders, `last` links in the making):
    only names of STAGING_PATTERN, and only those whose writing process is gone. A step folder set aside
    for replacement whose replacement never arrived is put back instead. Returns the names removed."""
    removed: list[str] = []
    if not checkpoints.is_dir():
        return removed
    for entry in sorted(checkpoints.iterdir()):
        match = STAGING_PATTERN.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(3))
        if pid != os.getpid() and process_alive(pid):  # ours counts as dead: a run sweeps before it saves
            continue
        kind, step = match.group(1), match.group(2)
        if kind == "old" and step is not None and not (checkpoints / step).exists():
            os.replace(entry, checkpoints / step)  # killed between setting it aside and replacing it
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def prepare_output_dir(cfg: TrainConfig) -> Path:
    """The run folder, checked writable, with a dead run's unfinished checkpoints swept, and refused
    when it holds checkpoints unless resume=true or overwrite=true."""
    output_dir = Path(cfg.output_dir)
    checkpoints = output_dir / CHECKPOINTS_DIR
    if cfg.resume and not (checkpoints / LAST_LINK).exists():
        raise ConfigError(f"resume=true but {checkpoints / LAST_LINK} does not exist; nothing to resume")
    check_writable(output_dir, "output_dir", "output_dir=...")
    swept = sweep_staging(checkpoints)
    if swept:
        print(f"removed {len(swept)} unfinished checkpoint(s) an interrupted run left in {checkpoints}: {swept}",
              file=sys.stderr)
    if cfg.resume:
        return output_dir
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.iterdir())
    if has_checkpoints and not cfg.overwrite:
        raise ConfigError(
            f"output_dir {output_dir} already holds checkpoints; pass resume=true to continue, pick a new "
            "output_dir=... or pass overwrite=true"
        )
    if cfg.overwrite:
        shutil.rmtree(checkpoints, ignore_errors=True)
        (output_dir / LOG_FILE).unlink(missing_ok=True)
    return output_dir


def check_resume_config(cfg: TrainConfig, checkpoint: Path) -> None:
    """Refuse to resume with settings that change the model or the data order."""
    saved = read_json_object(checkpoint / PRETRAINED_MODEL_DIR / TRAIN_CONFIG_FILE,
                             "resume from another checkpoint or start a new run")
    if not isinstance(saved.get("config"), dict):
        raise ConfigError(f"{checkpoint / PRETRAINED_MODEL_DIR / TRAIN_CONFIG_FILE} holds no training config; "
                          "resume from another checkpoint or start a new run")
    now = cfg.to_dict()
    for config in (saved["config"], now):
        for key in RESUME_FREE_DATASET_KEYS:
            config.get("dataset", {}).pop(key, None)
    differ = [k for k in RESUME_MUST_MATCH if saved["config"].get(k) != now.get(k)]
    if differ:
        details = "; ".join(f"{k}: checkpoint {saved['config'].get(k)!r} vs now {now.get(k)!r}" for k in differ)
        raise ConfigError(f"cannot resume {checkpoint}: the config conflicts with the run's ({details})")


class MetricsLog:
    """Appends one JSON object per logged step to train_log.jsonl and writes TensorBoard scalars."""

    def __init__(self, output_dir: Path) -> None:
        self._file = open(output_dir / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tensorboard = SummaryWriter(str(output_dir / "tensorboard"))

    def write(self, record: dict[str, Any], prefix: str = "train") -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tensorboard.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        self._file.close()
        self._tensorboard.close()


def validation_loss(runtime: PolicyRuntime, loader: Any, batches: int, precision: str) -> float:
    runtime.policy.eval()
    device = str(next(runtime.policy.parameters()).device)
    losses = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            with autocast_context(precision, device):
                # train-mode loss definitions (e.g. diffusion noise prediction) need forward in eval mode too
                loss, _ = runtime.policy.forward(runtime.preprocessor(batch))
            losses.append(float(loss))
    runtime.policy.train()
    return float(np.mean(losses)) if losses else float("nan")


def check_device(cfg: TrainConfig) -> None:
    """Refuse a device or precision this machine cannot run; apply torch_threads."""
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} but CUDA is not available here; use device=cpu")
    if cfg.precision == "fp16" and not cfg.device.startswith("cuda"):
        raise ConfigError("precision=fp16 needs a CUDA device; use precision=bf16 on CPU")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)


@dataclass
class TrainingData:
    """The episodes a run trains and validates on, and the datasets over them."""

    train_episodes: list[int]
    val_episodes: list[int]
    transforms: dict[str, dict[str, Any]]  # per camera: its checkpoint spec (resize / crop / kind / channels)
    dataset: LeRobotDataset  # or a CachedFramesDataset
    val_dataset: LeRobotDataset | None  # None: no validation
    cache_build_s: float  # seconds this process spent building decoded-frame caches (0: reused / none)

    @property
    def frame_cache(self) -> FrameCache | None:
        cache: FrameCache | None = getattr(self.dataset, "frame_cache", None)
        return cache


def open_training_data(cfg: TrainConfig, runtime: PolicyRuntime, accelerator: Accelerator) -> TrainingData:
    """Split the episodes and open the training (and validation) dataset on every process.

    dataset.frame_cache: the main process builds the decoded-frame cache while the others wait, then
    they open (reuse) it. Without the cache this is just a barrier.
    """
    meta = load_metadata(cfg.dataset)
    episodes = select_episodes(meta.total_episodes, cfg.dataset.episodes_to_use)
    train_eps, val_eps = split_episodes(episodes, cfg.dataset.val_episodes, cfg.seed)

    def open_datasets() -> tuple[LeRobotDataset, LeRobotDataset | None]:
        inputs = cfg.policy.input_features
        train_set = open_dataset(cfg.dataset, runtime.config, inputs, train_eps, cfg.output_dir)
        val_set = open_dataset(cfg.dataset, runtime.config, inputs, val_eps, cfg.output_dir) \
            if val_eps and cfg.val_every else None
        return train_set, val_set

    if accelerator.is_main_process:
        dataset, val_dataset = open_datasets()
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        dataset, val_dataset = open_datasets()
    cache_build_s = sum(d.frame_cache.build_s for d in (dataset, val_dataset) if isinstance(d, CachedFramesDataset))
    # The checkpoint's own camera specs (resize, crop, depth), so training frames images as the robot will.
    camera_specs = {k: v for k, v in runtime.feature_specs.items() if k.startswith(IMAGE_PREFIX)}
    return TrainingData(train_eps, val_eps, camera_specs, dataset, val_dataset,
                        cache_build_s)


@dataclass
class Optimisation:
    """What an optimisation step updates besides the model, all saved in a checkpoint's training state."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: EMA | None

    @classmethod
    def for_run(cls, runtime: PolicyRuntime, cfg: TrainConfig) -> Optimisation:
        optimizer = make_optimizer(runtime, cfg)
        scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        ema = EMA(runtime.policy, cfg.ema_decay) if cfg.ema_decay > 0 else None
        return cls(optimizer, make_scheduler(optimizer, cfg), scaler, ema)


@dataclass
class Position:
    """Where a run stands: optimiser steps done, and the epoch and batch its sampler continues from."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    wall_s: float = 0.0  # training time spent up to `step`, over every resumed run


def resume_position(cfg: TrainConfig, output_dir: Path, runtime: PolicyRuntime, optimisation: Optimisation,
                    device: str) -> Position:
    """Restore the model and optimisation state from checkpoints/last; where the run continues."""
    last = (output_dir / CHECKPOINTS_DIR / LAST_LINK).resolve()
    check_resume_config(cfg, last)
    progress = load_training_state(
        last / STATE_DIR, model=runtime.policy, optimizer=optimisation.optimizer, scheduler=optimisation.scheduler,
        scaler=optimisation.scaler, ema=optimisation.ema, device=device,
    )
    position = Position(progress["step"], progress["epoch"], progress["batch"], float(progress.get("wall_s", 0.0)))
    if position.step >= cfg.steps:
        raise ConfigError(f"the checkpoint is at step {position.step} >= steps={cfg.steps}; raise steps to continue")
    return position


def make_loaders(cfg: TrainConfig, data: TrainingData, start: Position, accelerator: Accelerator,
                 device: str) -> tuple[ResumableBatchSampler, Any, Any | None]:
    """(training sampler, training loader, validation loader or None); this rank's share of each batch."""
    sampler = ResumableBatchSampler(
        len(data.dataset), cfg.batch_size, cfg.seed, start.epoch, start.batch,
        rank=accelerator.process_index, world_size=accelerator.num_processes,
    )
    loader = make_loader(TransformedDataset(data.dataset, data.transforms, cfg.augment, train=True), sampler,
                         cfg.loader, device)
    val_loader = None
    if data.val_dataset is not None:
        val_sampler = ResumableBatchSampler(len(data.val_dataset), cfg.batch_size, cfg.seed, shuffle=False)
        val_loader = make_loader(TransformedDataset(data.val_dataset, data.transforms, None, train=False),
                                 val_sampler, cfg.loader, device)
    return sampler, loader, val_loader


def announce(cfg: TrainConfig, runtime: PolicyRuntime, data: TrainingData, start: Position, world_size: int,
             output_dir: Path) -> None:
    """What is about to be trained, on what, for how long (stderr)."""
    n_params = sum(p.numel() for p in runtime.policy.parameters())
    print(
        f"training {cfg.policy.type} ({n_params / 1e6:.2f} M parameters) on {len(data.train_episodes)} episodes / "
        f"{len(data.dataset)} frames (validation: {len(data.val_episodes)} episodes) for steps "
        f"{start.step + 1}..{cfg.steps}, effective batch {cfg.batch_size * cfg.grad_accum_steps * world_size} "
        f"-> {output_dir}",
        file=sys.stderr,
    )
    if data.frame_cache is not None:
        print(f"frame cache {data.frame_cache.folder}: "
              + (f"built in {data.cache_build_s:.1f} s" if data.cache_build_s else "reused"), file=sys.stderr)


class ThroughputWindow:
    """Loss and data-loading wait since the last log record, turned into that record's figures."""

    def __init__(self, samples_per_step: int) -> None:
        self.samples_per_step = samples_per_step
        self.restart()

    def restart(self) -> None:
        self.loss, self.steps, self.wait_s = 0.0, 0, 0.0
        self.started = time.perf_counter()

    def add(self, loss: float) -> None:
        self.loss += loss
        self.steps += 1

    def record(self, step: int, metrics: dict[str, float], run_start: float) -> dict[str, Any]:
        """The log record for `step` (this step's metrics plus the window's averages)."""
        now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        return {
            "step": step, **metrics, "loss_mean": self.loss / self.steps,
            "samples_per_s": self.steps * self.samples_per_step / elapsed,
            "data_wait_fraction": self.wait_s / elapsed, "elapsed_s": now - run_start,
        }


def run_steps(cfg: TrainConfig, runtime: PolicyRuntime, optimisation: Optimisation, data: TrainingData,
              start: Position, accelerator: Accelerator, output_dir: Path, device: str) -> RunOutcome:
    """Train from `start` to cfg.steps (or cfg.stop_after steps), logging, validating and saving on the
    main process as configured."""
    is_main = accelerator.is_main_process
    sampler, loader, val_loader = make_loaders(cfg, data, start, accelerator, device)
    model: torch.nn.Module = runtime.policy
    if accelerator.num_processes > 1:
        model = accelerator.prepare_model(runtime.policy)
    backward = accelerator.backward if accelerator.num_processes > 1 else None
    batches = iter(loader)
    if is_main:
        announce(cfg, runtime, data, start, accelerator.num_processes, output_dir)
    log = MetricsLog(output_dir) if is_main else None
    cache_s_to_log = data.cache_build_s if data.frame_cache is not None else None  # first record only
    window = ThroughputWindow(cfg.batch_size * cfg.grad_accum_steps * accelerator.num_processes)
    run_start = window.started
    consumed = start.epoch * sampler.batches_per_epoch + start.batch  # micro-batches drawn so far
    last_saved: Path | None = None
    step = start.step
    try:
        with tqdm(total=cfg.steps, initial=start.step, desc="train", unit="step", dynamic_ncols=True,
                  disable=not is_main) as progress_bar:
            while step < cfg.steps:
                wait_start = time.perf_counter()
                micro = [next(batches) for _ in range(cfg.grad_accum_steps)]
                window.wait_s += time.perf_counter() - wait_start
                consumed += cfg.grad_accum_steps
                metrics = train_step(runtime, micro, optimisation.optimizer, optimisation.scheduler,
                                     cfg.grad_clip_norm, precision=cfg.precision, scaler=optimisation.scaler,
                                     model=model, backward=backward)
                if optimisation.ema is not None:
                    optimisation.ema.update(runtime.policy)
                step += 1
                window.add(metrics["loss"])
                progress_bar.update(1)
                if log is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                    record = window.record(step, metrics, run_start)
                    if cache_s_to_log is not None:
                        record["frame_cache_build_s"], cache_s_to_log = cache_s_to_log, None
                    log.write(record)
                    progress_bar.set_postfix(loss=f"{record['loss_mean']:.4f}",
                                             samples_s=f"{record['samples_per_s']:.1f}",
                                             data_wait=f"{record['data_wait_fraction']:.0%}")
                    window.restart()
                if log is not None and val_loader is not None and step % cfg.val_every == 0:
                    log.write({"step": step, "val_loss": validation_loss(runtime, val_loader, cfg.val_batches,
                                                                         cfg.precision)}, prefix="val")
                stopping = bool(cfg.stop_after) and step - start.step >= cfg.stop_after
                if is_main and (step == cfg.steps or stopping or (cfg.save_every and step % cfg.save_every == 0)):
                    position = Position(step, consumed // sampler.batches_per_epoch,
                                        consumed % sampler.batches_per_epoch,
                                        start.wall_s + time.perf_counter() - run_start)
                    last_saved = save_checkpoint(runtime, cfg, step, training_state(optimisation, position),
                                                 provenance(cfg, data, position, device))
                if stopping:
                    break
    finally:
        if log is not None:
            log.close()
    return RunOutcome(step, last_saved, run_start)


@dataclass
class RunOutcome:
    step: int  # the last optimiser step done
    last_saved: Path | None  # the last checkpoint written (main process), None if none
    started: float  # time.perf_counter() when the first step began


def training_state(optimisation: Optimisation, position: Position) -> dict[str, Any]:
    """The `training_state` save_checkpoint writes beside the weights, to resume at `position`."""
    return {"optimizer": optimisation.optimizer, "scheduler": optimisation.scheduler, "scaler": optimisation.scaler,
            "ema": optimisation.ema,
            "progress": {"step": position.step, "epoch": position.epoch, "batch": position.batch,
                         "wall_s": position.wall_s}}


def provenance(cfg: TrainConfig, data: TrainingData, position: Position, device: str) -> dict[str, Any]:
    """What a results table says about how a checkpoint was made (saved beside its config)."""
    return {"train_episodes": len(data.train_episodes), "val_episodes": len(data.val_episodes),
            "train_wall_s": round(position.wall_s, 1), "device": device, "batch_size": cfg.batch_size,
            "grad_accum_steps": cfg.grad_accum_steps}


def train(cfg: TrainConfig) -> Path:
    """Run training as configured; returns the final (or last saved) checkpoint folder."""
    check_device(cfg)
    # One process: a no-op wrapper. Under `accelerate launch` / torchrun: DDP over the processes.
    accelerator = Accelerator(cpu=not cfg.device.startswith("cuda"))
    device = str(accelerator.device) if accelerator.num_processes > 1 else cfg.device
    is_main = accelerator.is_main_process
    output_dir = prepare_output_dir(cfg) if is_main else Path(cfg.output_dir)
    accelerator.wait_for_everyone()
    seed_everything(cfg.seed, cfg.deterministic)
    runtime = build_runtime(cfg, device)
    data = open_training_data(cfg, runtime, accelerator)
    optimisation = Optimisation.for_run(runtime, cfg)
    start = resume_position(cfg, output_dir, runtime, optimisation, device) if cfg.resume else Position()
    outcome = run_steps(cfg, runtime, optimisation, data, start, accelerator, output_dir, device)
    accelerator.wait_for_everyone()
    elapsed = time.perf_counter() - outcome.started
    final = outcome.last_saved or checkpoint_dir(output_dir, outcome.step)
    if is_main:
        print(f"done in {elapsed:.0f} s ({elapsed / max(outcome.step - start.step, 1):.3f} s/step); checkpoint: "
              f"{final / PRETRAINED_MODEL_DIR}", file=sys.stderr)
        if cfg.export_onnx and outcome.step >= cfg.steps:
            export_after_training(final, cfg.policy.type)
    return final


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train",
        description="Train a LeRobot policy on a local LeRobot v3.0 dataset.",
        epilog="example: train --config train/act_sim.yaml steps=200 output_dir=outputs/act_try",
    )
    parser.add_argument(
        "--config", required=True, help="training YAML: a path, or relative to config/ (train/act_sim.yaml)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config values")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 2 configuration or checkpoint error, 1 output error (disk full, read-only),
    130 interrupted; every error is one line on stderr."""
    args = parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        train(cfg)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 1
    except WRITE_FAILURES as exc:
        if not is_write_failure(exc):
            raise
        print(f"train: error: cannot write the run's output: {reason(exc)}; free space on that disk or make "
              "output_dir writable, then continue with resume=true", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train: interrupted; resume from checkpoints/last with resume=true", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
