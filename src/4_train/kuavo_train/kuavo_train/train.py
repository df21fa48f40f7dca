"""`train --config train/act_sim.yaml [key.sub=value ...]`: train a LeRobot policy offline.

The policy, its normalising processors and the checkpoint format come from
koch_common.policy_runtime, the same code the robot's policy node runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from koch_common.config import ConfigError
from koch_common.policy_runtime import PRETRAINED_MODEL_DIR, PolicyRuntime, build_policy
from kuavo_train.config import TrainConfig, load_train_config
from kuavo_train.data import infinite_batches, load_metadata, open_dataset

if TYPE_CHECKING:
    import torch

CHECKPOINTS_DIR = "checkpoints"
LAST_LINK = "last"
LOG_FILE = "train_log.jsonl"
TRAIN_CONFIG_FILE = "kuavo_train_config.json"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_runtime(cfg: TrainConfig) -> PolicyRuntime:
    """A fresh policy + processors for `cfg`, normalising with the dataset's stats."""
    meta = load_metadata(cfg.dataset)
    return build_policy(
        cfg.policy.type,
        cfg.policy.overrides,
        meta.features,
        meta.stats,
        cfg.policy.input_features,
        device=cfg.device,
    )


def make_optimizer(runtime: PolicyRuntime, cfg: TrainConfig) -> torch.optim.Optimizer:
    import torch

    params = [p for p in runtime.policy.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from lr/warmup to lr over `warmup_steps`, then constant."""
    import torch

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_step(
    runtime: PolicyRuntime,
    batch: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    grad_clip_norm: float,
) -> dict[str, float]:
    """One optimisation step on a raw dataset batch; returns loss terms, grad norm and lr."""
    import torch

    runtime.policy.train()
    processed = runtime.preprocessor(batch)
    loss, terms = runtime.policy.forward(processed)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss.item()}; lower lr or raise warmup_steps")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = grad_clip_norm if grad_clip_norm > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(runtime.policy.parameters(), max_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    out = {"loss": float(loss.item()), "grad_norm": float(grad_norm), "lr": optimizer.param_groups[0]["lr"]}
    out.update({k: float(v) for k, v in (terms or {}).items() if isinstance(v, (int, float))})
    return out


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"{step:06d}"


def save_checkpoint(runtime: PolicyRuntime, cfg: TrainConfig, step: int) -> Path:
    """Write `<output_dir>/checkpoints/<step>/pretrained_model` and point `last` at it.

    Everything is written into a hidden temp folder first and renamed into place, so an
    interrupted save leaves either the previous checkpoint set or the complete new one.
    """
    checkpoints = Path(cfg.output_dir) / CHECKPOINTS_DIR
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(Path(cfg.output_dir), step)
    staging = checkpoints / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    pretrained = staging / PRETRAINED_MODEL_DIR
    runtime.save(pretrained)
    (pretrained / TRAIN_CONFIG_FILE).write_text(
        json.dumps({"step": step, "config": cfg.to_dict()}, indent=2), encoding="utf-8"
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    link_tmp = checkpoints / f".{LAST_LINK}-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name, target_is_directory=True)
    os.replace(link_tmp, checkpoints / LAST_LINK)
    return final


def prepare_output_dir(cfg: TrainConfig) -> Path:
    output_dir = Path(cfg.output_dir)
    checkpoints = output_dir / CHECKPOINTS_DIR
    if checkpoints.is_dir() and any(checkpoints.iterdir()) and not cfg.overwrite:
        raise ConfigError(
            f"output_dir {output_dir} already holds checkpoints; pick a new output_dir=... "
            "or pass overwrite=true"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        (output_dir / LOG_FILE).unlink(missing_ok=True)
    return output_dir


class MetricsLog:
    """Appends one JSON object per logged step to train_log.jsonl (and TensorBoard if installed)."""

    def __init__(self, output_dir: Path) -> None:
        self._file = open(output_dir / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
        except ImportError:
            pass  # TensorBoard is optional; the JSON-lines log is always written.

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def train(cfg: TrainConfig) -> Path:
    """Run training as configured; returns the final checkpoint folder."""
    import torch
    from tqdm import tqdm

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} but CUDA is not available here; use device=cpu")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    output_dir = prepare_output_dir(cfg)
    seed_everything(cfg.seed)
    runtime = build_runtime(cfg)
    dataset = open_dataset(cfg.dataset, runtime.config, cfg.policy.input_features)
    batches: Iterator[dict[str, Any]] = infinite_batches(dataset, cfg.batch_size, cfg.num_workers, cfg.seed)
    optimizer = make_optimizer(runtime, cfg)
    scheduler = make_scheduler(optimizer, cfg.warmup_steps)
    n_params = sum(p.numel() for p in runtime.policy.parameters())
    print(
        f"training {cfg.policy.type} ({n_params / 1e6:.2f} M parameters) on "
        f"{dataset.num_episodes} episodes / {dataset.num_frames} frames for {cfg.steps} steps "
        f"-> {output_dir}",
        file=sys.stderr,
    )

    log = MetricsLog(output_dir)
    final = checkpoint_dir(output_dir, cfg.steps)
    window_losses: list[float] = []
    window_start = start = time.perf_counter()
    try:
        with tqdm(total=cfg.steps, desc="train", unit="step", dynamic_ncols=True) as progress:
            for step in range(1, cfg.steps + 1):
                metrics = train_step(runtime, next(batches), optimizer, scheduler, cfg.grad_clip_norm)
                window_losses.append(metrics["loss"])
                progress.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    samples_per_s = len(window_losses) * cfg.batch_size / max(now - window_start, 1e-9)
                    record = {
                        "step": step,
                        **metrics,
                        "loss_mean": float(np.mean(window_losses)),
                        "samples_per_s": samples_per_s,
                        "elapsed_s": now - start,
                    }
                    log.write(record)
                    progress.set_postfix(loss=f"{record['loss_mean']:.4f}", samples_s=f"{samples_per_s:.1f}")
                    window_losses.clear()
                    window_start = now
                if cfg.save_every and step % cfg.save_every == 0 and step != cfg.steps:
                    save_checkpoint(runtime, cfg, step)
        final = save_checkpoint(runtime, cfg, cfg.steps)
    finally:
        log.close()
    elapsed = time.perf_counter() - start
    print(
        f"done in {elapsed:.0f} s ({elapsed / cfg.steps:.3f} s/step); "
        f"checkpoint: {final / PRETRAINED_MODEL_DIR}",
        file=sys.stderr,
    )
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
    args = parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        train(cfg)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train: interrupted; the last complete checkpoint is under checkpoints/last", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
