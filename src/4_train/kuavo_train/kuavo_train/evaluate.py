"""`kuavo_eval --checkpoint <run>/checkpoints/last`: offline evaluation on held-out episodes.

For each evaluated frame the policy predicts a chunk from the recorded observation (with its
n_obs_steps history) and the chunk is compared with the recorded future actions, in robot units
(padding past an episode's end excluded). Writes MSE / MAE per joint and per chunk step to
`eval.json` and plots them to `eval.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from koch_common.config import ConfigError, from_dict
from koch_runtime.checkpoint import PRETRAINED_MODEL_DIR, resolve_pretrained_dir
from koch_runtime.checkpoint_trust import CheckpointError, read_json_object
from koch_runtime.observation import IMAGE_PREFIX, with_stacked_cameras
from koch_runtime.torch_runtime import PolicyRuntime
from kuavo_train.config import TrainConfig
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
from kuavo_train.train import TRAIN_CONFIG_FILE


def predict_normalized(runtime: PolicyRuntime, batch: dict[str, Any]) -> torch.Tensor:
    """The policy's normalised chunk for a preprocessed dataset batch (history included)."""
    policy = runtime.policy
    if hasattr(policy, "diffusion"):
        if not hasattr(policy, "observe"):  # LeRobot diffusion stacks its cameras
            batch = with_stacked_cameras(batch, policy.config)
        return policy.diffusion.generate_actions(batch)
    return policy.predict_action_chunk(batch)


def evaluate(checkpoint: Path | str, episodes: list[int] | None = None, output: Path | str | None = None,
             max_batches: int = 0, batch_size: int = 16, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Evaluate `checkpoint` on `episodes` (default: the run's held-out ones); writes and returns the report."""
    pretrained = resolve_pretrained_dir(checkpoint)
    fix = "kuavo_eval needs a checkpoint written by `train`"
    saved = read_json_object(pretrained / TRAIN_CONFIG_FILE, fix)
    if not isinstance(saved.get("config"), dict):
        raise CheckpointError(f"{pretrained / TRAIN_CONFIG_FILE} holds no training config; {fix}")
    cfg: TrainConfig = from_dict(TrainConfig, saved["config"], where=str(pretrained / TRAIN_CONFIG_FILE))
    if episodes is None:
        meta = load_metadata(cfg.dataset)
        selected = select_episodes(meta.total_episodes, cfg.dataset.episodes_to_use)
        episodes = split_episodes(selected, cfg.dataset.val_episodes, cfg.seed)[1]
        if not episodes:
            raise ConfigError("the run held out no episodes (dataset.val_episodes=0); pass --episodes i j ...")
    runtime = PolicyRuntime.load(pretrained, device)  # checked: a refused checkpoint is never run
    out_dir = Path(output) if output else pretrained.parent / "eval"
    check_writable(out_dir, "the evaluation folder", "--output DIR")  # before the work, not after
    dataset = open_dataset(cfg.dataset, runtime.config, cfg.policy.input_features, episodes, cfg.output_dir)
    transforms = {k: v for k, v in runtime.feature_specs.items() if k.startswith(IMAGE_PREFIX)}
    sampler = ResumableBatchSampler(len(dataset), min(batch_size, len(dataset)), seed, shuffle=False)
    loader = make_loader(TransformedDataset(dataset, transforms, None, train=False), sampler, cfg.loader, device)
    n_obs = int(getattr(runtime.config, "n_obs_steps", 1))
    start = n_obs - 1 if hasattr(runtime.policy, "diffusion") else 0
    sq_sum = abs_sum = count = None
    torch.manual_seed(seed)
    n_batches = max_batches or len(sampler)
    with torch.inference_mode():
        for i, batch in enumerate(loader):
            if i >= n_batches:
                break
            truth = batch["action"]
            pad = batch["action_is_pad"]
            processed = runtime.preprocessor({k: v for k, v in batch.items() if k != "action"})
            predicted = runtime.postprocessor(predict_normalized(runtime, processed)).cpu()
            steps = predicted.shape[1]
            truth, valid = truth[:, start:start + steps], (~pad[:, start:start + steps]).float().unsqueeze(-1)
            err = (predicted - truth) * valid
            sq, ab, n = (err**2).sum(0), err.abs().sum(0), valid.expand_as(err).sum(0)
            sq_sum, abs_sum = (sq, ab) if sq_sum is None else (sq_sum + sq, abs_sum + ab)
            count = n if count is None else count + n
    assert sq_sum is not None and abs_sum is not None and count is not None
    names = runtime.action_names
    report = {
        "checkpoint": str(pretrained), "episodes": episodes, "frames": int(count[0, 0]),
        "mse": float((sq_sum.sum() / count.sum()).item()), "mae": float((abs_sum.sum() / count.sum()).item()),
        "mse_per_joint": dict(zip(names, (sq_sum.sum(0) / count.sum(0)).tolist(), strict=True)),
        "mae_per_joint": dict(zip(names, (abs_sum.sum(0) / count.sum(0)).tolist(), strict=True)),
        "mse_per_step": (sq_sum.sum(1) / count.sum(1).clamp(min=1)).tolist(),
        "mae_per_step": (abs_sum.sum(1) / count.sum(1).clamp(min=1)).tolist(),
    }
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot(report, out_dir / "eval.png")
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (joints, steps) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(report["mae_per_joint"])
    joints.bar(names, [report["mae_per_joint"][n] for n in names])
    joints.set_title("MAE per joint (robot units)")
    joints.tick_params(axis="x", rotation=45)
    x = np.arange(1, len(report["mae_per_step"]) + 1)
    steps.plot(x, report["mae_per_step"], marker="o", label="MAE")
    steps.plot(x, np.sqrt(report["mse_per_step"]), marker="s", label="RMSE")
    steps.set_xlabel("chunk step")
    steps.set_title(f"error along the chunk ({report['frames']} frames, episodes {report['episodes']})")
    steps.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kuavo_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help=f"<run>/checkpoints/last (or its {PRETRAINED_MODEL_DIR})")
    parser.add_argument("--episodes", type=int, nargs="*", default=None,
                        help="episode indices (default: the run's held-out dataset.val_episodes)")
    parser.add_argument("--output", default=None, help="folder for eval.json / eval.png (default: beside it)")
    parser.add_argument("--max-batches", type=int, default=0, help="0 = every frame")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.checkpoint, args.episodes, args.output, args.max_batches, device=args.device)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"kuavo_eval: error: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:
        print(f"kuavo_eval: error: {exc}", file=sys.stderr)
        return 1
    except WRITE_FAILURES as exc:
        if not is_write_failure(exc):
            raise
        print(f"kuavo_eval: error: cannot write the report: {reason(exc)}; free space or pass another --output",
              file=sys.stderr)
        return 1
    print(json.dumps({k: report[k] for k in ("episodes", "frames", "mse", "mae")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
