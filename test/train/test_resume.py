"""Training-loop features through the real `train` CLI: exact resume after a kill, EMA, accumulation,
schedules, augmentation, keep-last-K, TensorBoard, data-wait reporting, conflicting configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from synthetic_reach import SyntheticDataset

import kuavo_train.train as train_module
from kuavo_train.train import main

pytestmark = [pytest.mark.video, pytest.mark.training]

TINY_ACT = [
    "policy.overrides.chunk_size=4", "policy.overrides.n_action_steps=4", "policy.overrides.dim_model=16",
    "policy.overrides.n_heads=2", "policy.overrides.dim_feedforward=32", "policy.overrides.n_encoder_layers=1",
    "policy.overrides.n_decoder_layers=1", "policy.overrides.dropout=0.1",
]


def args(dataset: SyntheticDataset, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", "train/act_sim.yaml", f"dataset.root={dataset.root}", f"dataset.repo_id={dataset.repo_id}",
        f"output_dir={output_dir}", *TINY_ACT,
        # Every stateful feature on, so resume has to restore all of it.
        "steps=4", "batch_size=2", "grad_accum_steps=2", "num_workers=0", "log_every=1", "save_every=2",
        "keep_last=1", "warmup_steps=1", "schedule=cosine", "ema_decay=0.9", "precision=bf16",
        "augment.enable=true", "dataset.resize=[48, 64]", "dataset.crop=[44, 60]", "dataset.episodes_to_use=2",
        "export_onnx=false",  # the export at the end is test_eval_export's
        *extra,
    ]


def losses(output_dir: Path) -> dict[int, float]:
    """Loss per step; a step logged again after a resume keeps its latest value."""
    records = [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_resume_after_a_kill_continues_with_identical_losses(
    reach_dataset: SyntheticDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(args(reach_dataset, tmp_path / "straight")) == 0
    straight = losses(tmp_path / "straight")
    assert sorted(straight) == [1, 2, 3, 4]

    # Killed during step 3: the step-2 checkpoint is the newest on disk.
    real_step = train_module.train_step
    calls = {"n": 0}

    def dying_step(*a: object, **k: object) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(train_module, "train_step", dying_step)
    assert main(args(reach_dataset, tmp_path / "killed")) == 130
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert sorted(losses(tmp_path / "killed")) == [1, 2]
    assert main(args(reach_dataset, tmp_path / "killed", "resume=true")) == 0

    resumed = losses(tmp_path / "killed")
    assert resumed == straight  # bit-identical floats, steps 1..4
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["000004", "last"]  # keep_last=1
    for part in ("pretrained_model/model.safetensors", "training_state/training_state.safetensors"):
        a = load_file(str(tmp_path / "straight" / "checkpoints" / "000004" / part))
        b = load_file(str(checkpoints / "000004" / part))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), part
    # pretrained_model holds the EMA weights, training_state the raw ones: they differ.
    ema = load_file(str(checkpoints / "000004" / "pretrained_model" / "model.safetensors"))
    raw = load_file(str(checkpoints / "000004" / "training_state" / "training_state.safetensors"))
    assert any(not ema[k].equal(raw[f"model.{k}"]) for k in ema)
    # No pickle anywhere in a checkpoint.
    assert not [p for p in checkpoints.rglob("*") if p.suffix in {".pt", ".pth", ".bin", ".pkl"}]

    records = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["data_wait_fraction"] <= 1.0 and r["samples_per_s"] > 0 for r in records)
    lrs = [r["lr"] for r in records]
    assert lrs[0] > lrs[-1]  # cosine decay after warm-up
    assert list((tmp_path / "straight" / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_with_a_conflicting_config_is_refused(
    reach_dataset: SyntheticDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(args(reach_dataset, run, "steps=1", "ema_decay=0.0")) == 0
    assert main(args(reach_dataset, run, "ema_decay=0.0", "resume=true", "batch_size=3")) == 2
    err = capsys.readouterr().err
    assert "conflicts" in err and "batch_size" in err


def test_base_config_conflict_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("base: train/act_sim.yaml\npolicy:\n  type: diffusion\n")
    assert main(["--config", str(child)]) == 2
    err = capsys.readouterr().err
    assert "policy.type='diffusion'" in err and "act_sim.yaml" in err and "policy.overrides" in err
    child.write_text("base: train/act_sim.yaml\ndataset: data/elsewhere\n")
    assert main(["--config", str(child)]) == 2
    assert "dataset is a str but base" in capsys.readouterr().err


def test_shipped_rgbd_config_replaces_the_base_policy_settings() -> None:
    from kuavo_train.config import load_train_config

    cfg = load_train_config("train/rgbd_diffusion.yaml")
    assert cfg.policy.type == "rgbd_diffusion" and "dim_model" not in cfg.policy.overrides
    assert cfg.batch_size * cfg.grad_accum_steps == 256 and cfg.seed == 0  # the rest comes from the base


def test_same_script_trains_data_parallel_over_two_processes(reach_dataset: SyntheticDataset, tmp_path: Path) -> None:
    """torchrun (what `accelerate launch` also sets up) with 2 CPU processes: gloo DDP, rank 0 saves.

    With the frame cache on: rank 0 builds it while rank 1 waits, then both read it.
    """
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "kuavo_train.train",
           *args(reach_dataset, tmp_path / "ddp", "steps=2", "ema_decay=0.0", "precision=fp32",
                "dataset.frame_cache=true")[0:]]
    # The child processes import the packages from the source tree, as this pytest session does.
    path = os.pathsep.join([p for p in sys.path if p.endswith(("kuavo_train", "koch_common"))] +
                           [os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "effective batch 8" in result.stderr  # 2 per micro-batch x 2 accumulation x 2 processes
    assert sorted(losses(tmp_path / "ddp")) == [1, 2]
    assert (tmp_path / "ddp" / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()
    assert len(list((tmp_path / "ddp" / "frame_cache").iterdir())) == 1  # one cache, no staging leftovers
    first = json.loads((tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()[0])
    assert first["frame_cache_build_s"] > 0
