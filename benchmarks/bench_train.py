"""Training throughput: kuavo_train vs LeRobot's own `lerobot-train`, same dataset, same ACT, same run.

    python benchmarks/bench_train.py [--quick] [--device cpu|cuda] [--workers N]

Builds a synthetic reach dataset (real LeRobot v3.0, h264 video), then trains the same ACT config
with the same batch size and DataLoader workers through both trainers, each in its own process,
and prints samples/s and the fraction of step time spent waiting for data, plus the ratio
(target: kuavo_train >= 1.2x lerobot-train). The first logged window of each run (start-up,
worker spawn, first video decoder opens) is excluded from the figures. kuavo_train runs with
dataset.frame_cache=true; its cache build time (before step 1) is printed separately.

Figures: kuavo_train from its train_log.jsonl (samples_per_s, data_wait_fraction per window);
lerobot-train from its log lines (updt_s, data_s per step; data_s there also includes its
normalisation pre-processor).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from results_log import Comparison, Figure, Target, record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

ACT = {"chunk_size": 10, "n_action_steps": 10, "dim_model": 64, "n_heads": 4, "dim_feedforward": 128,
       "n_encoder_layers": 1, "n_decoder_layers": 1, "use_vae": False, "dropout": 0.1}


def run_kuavo(dataset: Path, repo_id: str, out: Path, steps: int, batch: int, workers: int, log_every: int,
              device: str) -> tuple[float, float]:
    overrides = [f"policy.overrides.{k}={json.dumps(v)}" for k, v in ACT.items()]
    cmd = [sys.executable, "-m", "kuavo_train.train", "--config", "train/act_sim.yaml",
           f"dataset.root={dataset}", f"dataset.repo_id={repo_id}", f"output_dir={out}", *overrides,
           f"steps={steps}", f"batch_size={batch}", f"num_workers={workers}", f"log_every={log_every}",
           "save_every=0", "warmup_steps=0", f"device={device}", "lr=0.0001",
           # kuavo_train's decoded-frame cache (lerobot-train has none): built once before step 1.
           "dataset.frame_cache=true"]
    result = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"kuavo_train failed:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    print(f"  kuavo_train frame cache built in {records[0]['frame_cache_build_s']:.2f} s "
          "(before step 1; not in the figures)", flush=True)
    records = records[1:]
    samples = sum(r["samples_per_s"] for r in records) / len(records)
    wait = sum(r["data_wait_fraction"] for r in records) / len(records)
    return samples, wait


def run_lerobot(dataset: Path, repo_id: str, out: Path, steps: int, batch: int, workers: int, log_every: int,
                device: str) -> tuple[float, float]:
    policy = [f"--policy.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in ACT.items()]
    cmd = [sys.executable, "-m", "lerobot.scripts.lerobot_train", f"--dataset.repo_id={repo_id}",
           f"--dataset.root={dataset}", "--policy.type=act", "--policy.push_to_hub=false",
           "--policy.pretrained_backbone_weights=null", f"--policy.device={device}", *policy,
           f"--output_dir={out}", f"--steps={steps}", f"--batch_size={batch}", f"--num_workers={workers}",
           f"--log_freq={log_every}", "--save_checkpoint=false", "--wandb.enable=false", "--eval_freq=0",
           "--policy.optimizer_lr=0.0001"]
    result = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"lerobot-train failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    text = result.stdout + result.stderr
    windows = [(float(u), float(d)) for u, d in re.findall(r"updt_s:([\d.]+) data_s:([\d.]+)", text)][1:]
    if not windows:
        raise RuntimeError(f"no updt_s/data_s lines in lerobot-train's output:\n{text[-3000:]}")
    step_s = sum(u + d for u, d in windows) / len(windows)
    wait = sum(d / (u + d) for u, d in windows) / len(windows)
    return batch / step_s, wait


def env() -> dict[str, str]:
    out = dict(os.environ, HF_HUB_OFFLINE="1", KOCH_CONFIG_DIR=str(ROOT / "config"))
    sources = [ROOT / "src/4_train/kuavo_train", ROOT / "src/shared/koch_runtime", ROOT / "src/shared/koch_common"]
    out["PYTHONPATH"] = os.pathsep.join([*(str(path) for path in sources), out.get("PYTHONPATH", "")])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small dataset and few steps (CI machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    from synthetic_reach import build_reach_dataset

    episodes, frames, steps, log_every = (6, 30, 24, 6) if args.quick else (20, 90, 200, 20)
    with tempfile.TemporaryDirectory() as tmp:
        data = build_reach_dataset(Path(tmp) / "data", episodes=episodes, frames_per_episode=frames)
        # A B B A order, averaged: on a shared machine the load drifts between runs.
        runs: dict[str, list[tuple[float, float]]] = {"lerobot-train": [], "kuavo_train": []}
        runners = {"lerobot-train": run_lerobot, "kuavo_train": run_kuavo}
        for i, name in enumerate(("lerobot-train", "kuavo_train", "kuavo_train", "lerobot-train")):
            runs[name].append(runners[name](data.root, data.repo_id, Path(tmp) / f"{name}-{i}", steps,
                                            args.batch_size, args.workers, log_every, args.device))
            print(f"run {i + 1}/4 {name}: {runs[name][-1][0]:.1f} samples/s", flush=True)
        figures = {name: (sum(r[0] for r in rs) / len(rs), sum(r[1] for r in rs) / len(rs))
                   for name, rs in runs.items()}
    print(f"\ndataset: {episodes} episodes x {frames} frames (96x128 h264); ACT {ACT['dim_model']}-d; batch "
          f"{args.batch_size}; {args.workers} workers; {steps} steps on {args.device} (first {log_every} excluded; "
          "mean of 2 runs each, A B B A)")
    for name, (samples, wait) in figures.items():
        print(f"{name:14s} {samples:8.1f} samples/s   data-wait fraction {wait:6.1%}")
    ratio = figures["kuavo_train"][0] / figures["lerobot-train"][0]
    print(f"ratio kuavo_train / lerobot-train: {ratio:.2f}x (target >= 1.2x)")
    figures_logged = []
    for name, (samples, wait) in figures.items():
        figures_logged += [Figure(f"{name} throughput", samples, "samples/s"),
                           Figure(f"{name} data wait", wait * 100, "% of step time")]
    figures_logged.append(Figure("kuavo_train / lerobot-train", ratio, "x", Target(Comparison.AT_LEAST, 1.2)))
    record("train", figures_logged, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
