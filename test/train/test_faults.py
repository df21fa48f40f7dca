"""Faults around training, evaluation and export: one line naming the file and the fix, never a traceback,
and no half-written checkpoint left behind (disk full, read-only output, interrupted saves, bad checkpoints,
bad hyper-parameters)."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
from safetensors import SafetensorError
from synthetic_reach import SyntheticDataset
from test_resume import TINY_ACT

import kuavo_train.errors as errors_module
from koch_common.config import ConfigError
from koch_runtime.torch_runtime import PolicyRuntime
from kuavo_train.config import DatasetConfig, TrainConfig
from kuavo_train.evaluate import main as eval_main
from kuavo_train.export import main as export_main
from kuavo_train.train import main as train_main
from kuavo_train.train import prepare_output_dir, staging_name, sweep_staging

DISK_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"  # what safetensors raises


def error_line(err: str, prog: str) -> str:
    """The CLI's one error line; the rest of stderr (progress bars, announcements) has no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def train_args(dataset: SyntheticDataset | None, output_dir: Path, *extra: str) -> list[str]:
    root, repo_id = (dataset.root, dataset.repo_id) if dataset else ("/nonexistent", "local/none")
    return ["--config", "train/act_sim.yaml", f"dataset.root={root}", f"dataset.repo_id={repo_id}",
            f"output_dir={output_dir}", *TINY_ACT, "batch_size=2", "num_workers=0", "log_every=1",
            "export_onnx=false", *extra]  # the export at the end is test_eval_export's


def contents(checkpoints: Path) -> list[str]:
    return sorted(p.name for p in checkpoints.iterdir())


def failing_save_file(fail_when: Callable[[str], bool], exc: BaseException) -> Callable[..., None]:
    """safetensors' save_file, but for a matching path it writes half the file and then raises `exc`."""
    real = safetensors.torch.save_file

    def save_file(tensors: dict[str, Any], filename: str, *args: Any, **kwargs: Any) -> None:
        if fail_when(str(filename)):
            Path(filename).write_bytes(b"\0" * 1000)  # what a full disk leaves: a part of the file
            raise exc
        real(tensors, filename, *args, **kwargs)

    return save_file


@pytest.mark.video
@pytest.mark.training
def test_a_full_disk_during_a_save_keeps_the_last_complete_checkpoint(
    reach_dataset: SyntheticDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    # The step-2 save fails after its model is written, while its training state is half written.
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file(
        lambda name: ".tmp-000002-" in name and name.endswith("training_state.safetensors"),
        SafetensorError(DISK_FULL)))
    assert train_main(train_args(reach_dataset, run, "steps=3", "save_every=1")) == 1
    line = error_line(capsys.readouterr().err, "train")
    assert f"cannot save checkpoint 000002 in {run / 'checkpoints'}: no space left on the device" in line
    assert "still points to 000001" in line and "resume=true" in line
    checkpoints = run / "checkpoints"
    assert contents(checkpoints) == ["000001", "last"]  # no 000002, no .tmp-*, no .last-*
    assert os.readlink(checkpoints / "last") == "000001"
    PolicyRuntime.load(checkpoints / "last")  # the previous checkpoint is whole

    monkeypatch.undo()  # space freed: the run continues from 000001
    assert train_main(train_args(reach_dataset, run, "steps=3", "save_every=1", "resume=true")) == 0
    assert contents(checkpoints) == ["000001", "000002", "000003", "last"]


@pytest.mark.video
@pytest.mark.training
def test_an_interrupted_save_leaves_no_staging_folder(
    reach_dataset: SyntheticDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file(
        lambda name: name.endswith("training_state.safetensors"), KeyboardInterrupt()))
    assert train_main(train_args(reach_dataset, tmp_path / "run", "steps=1")) == 130
    assert contents(tmp_path / "run" / "checkpoints") == []


def test_a_read_only_output_dir_is_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def read_only(*args: Any, dir: str, **kwargs: Any) -> Any:  # noqa: A002 - mkstemp's own name
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, ".write-probe-x"))

    monkeypatch.setattr(errors_module.tempfile, "mkstemp", read_only)
    assert train_main(train_args(None, tmp_path / "run", "steps=1")) == 1  # before the dataset is opened
    line = error_line(capsys.readouterr().err, "train")
    assert f"output_dir {tmp_path / 'run'} cannot be written: the file system is read-only" in line
    assert "output_dir=..." in line


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_leftovers_of_dead_runs_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "000001").mkdir(parents=True)
    dead, live = dead_pid(), os.getppid()  # pytest's parent outlives this test
    stale = [staging_name("tmp", dead, 2), staging_name("old", dead, 1), staging_name("tmp", os.getpid(), 3)]
    kept = [staging_name("tmp", live, 2), ".tmp-notours", "000001"]
    for name in stale[:-1] + kept[:2]:
        (checkpoints / name / "pretrained_model").mkdir(parents=True)
        (checkpoints / name / "pretrained_model" / "model.safetensors").write_bytes(b"\0" * 100)
    (checkpoints / stale[-1]).mkdir()
    (checkpoints / staging_name("last", dead)).symlink_to("000001")
    # Killed between setting step 5 aside (to replace it) and renaming its replacement in: put back.
    (checkpoints / staging_name("old", dead, 5)).mkdir()
    assert sorted(sweep_staging(checkpoints)) == sorted([*stale, staging_name("last", dead)])
    assert contents(checkpoints) == sorted([*kept, "000005"])
    # A run into a folder that held only a dead run's leftovers is a fresh run, not one "holding checkpoints".
    shutil.rmtree(checkpoints)
    (checkpoints / staging_name("tmp", dead, 1)).mkdir(parents=True)
    cfg = TrainConfig(dataset=DatasetConfig("local/none", "/nonexistent"), output_dir=str(tmp_path / "run"))
    prepare_output_dir(cfg)
    assert contents(checkpoints) == []


@pytest.mark.parametrize(("override", "named"), [
    ("lr=nan", "lr: 'nan' is not a finite number"), ("lr=0", "lr must be a finite number > 0"),
    ("weight_decay=-1e-4", "weight_decay must be a finite number >= 0"), ("min_lr_ratio=2", "min_lr_ratio"),
    ("grad_clip_norm=.inf", "grad_clip_norm: inf is not a finite number"), ("steps=true", "steps"),
])
def test_bad_hyper_parameters_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, named: str
) -> None:
    assert train_main(train_args(None, tmp_path / "run", override)) == 2
    assert named in error_line(capsys.readouterr().err, "train")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field", ["lr", "weight_decay", "grad_clip_norm", "min_lr_ratio", "ema_decay"])
def test_a_train_config_built_in_python_refuses_non_finite_numbers(field: str) -> None:
    for value in (math.nan, math.inf, -1.0):
        with pytest.raises(ConfigError, match=field):
            TrainConfig(dataset=DatasetConfig("local/none", "/nonexistent"), output_dir="/tmp/x", **{field: value})


# --- kuavo_eval and kuavo_export on checkpoints that must be refused ------------------------------------------


@pytest.fixture(scope="module")
def trained(reach_dataset: SyntheticDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint the `train` CLI wrote (with its kuavo_train_config.json, which kuavo_eval reads)."""
    run = tmp_path_factory.mktemp("faults") / "run"
    assert train_main(train_args(reach_dataset, run, "steps=1")) == 0
    return run / "checkpoints" / "000001"


def edit_json(path: Path, edit: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def os_system_step(marker: Path) -> Callable[[Path], str]:
    def corrupt(pretrained: Path) -> str:
        edit_json(pretrained / "policy_preprocessor.json", lambda d: d["steps"].insert(
            0, {"class": "os.system", "config": {"command": f"touch {marker}"}}))
        return r"policy_preprocessor\.json: step 0 names the import path 'os\.system'"
    return corrupt


def truncated_model(pretrained: Path) -> str:
    model = pretrained / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100_000])
    return f"{model} is truncated or corrupt"


def unknown_type(pretrained: Path) -> str:
    edit_json(pretrained / "config.json", lambda d: d.__setitem__("type", "actt"))
    return r"policy type 'actt' is not one this workspace loads; known types: \[.*'act'"


@pytest.mark.video
@pytest.mark.training
@pytest.mark.parametrize("corruption", ["os_system", "truncated", "unknown_type"])
def test_eval_and_export_refuse_a_bad_checkpoint_in_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], corruption: str
) -> None:
    import re

    marker = tmp_path / "pwned"
    corrupt = {"os_system": os_system_step(marker), "truncated": truncated_model, "unknown_type": unknown_type}
    checkpoint = tmp_path / "000001"
    shutil.copytree(trained, checkpoint)
    pattern = corrupt[corruption](checkpoint / "pretrained_model")
    assert eval_main(["--checkpoint", str(checkpoint), "--episodes", "0", "--output", str(tmp_path / "eval")]) == 2
    assert re.search(pattern, error_line(capsys.readouterr().err, "kuavo_eval"))
    assert export_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "onnx")]) == 2
    assert re.search(pattern, error_line(capsys.readouterr().err, "kuavo_export"))
    assert not marker.exists() and not (tmp_path / "onnx").exists() and not (tmp_path / "eval").exists()


@pytest.mark.video
@pytest.mark.training
def test_eval_into_a_read_only_folder_is_one_line(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def read_only(*args: Any, dir: str, **kwargs: Any) -> Any:  # noqa: A002 - mkstemp's own name
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, ".write-probe-x"))

    monkeypatch.setattr(errors_module.tempfile, "mkstemp", read_only)
    assert eval_main(["--checkpoint", str(trained), "--episodes", "0", "--output", str(tmp_path / "eval")]) == 1
    line = error_line(capsys.readouterr().err, "kuavo_eval")
    assert f"the evaluation folder {tmp_path / 'eval'} cannot be written: the file system is read-only" in line
    assert export_main(["--checkpoint", str(trained), "--output", str(tmp_path / "onnx")]) == 1
    assert "the export folder" in error_line(capsys.readouterr().err, "kuavo_export")
