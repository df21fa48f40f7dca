"""Offline evaluation on held-out episodes, and ONNX export checked against PyTorch."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_reach import JOINTS, SyntheticDataset
from test_policies import RGBD, TINY_RGBD, tiny
from test_resume import TINY_ACT

from koch_common.checkpoint_layout import RuntimeKind
from koch_runtime.checkpoint_trust import CheckpointError
from koch_runtime.factory import load_runtime
from koch_runtime.observation import PolicyInputError
from koch_runtime.onnx_runtime import OnnxRuntime, find_onnx_dir
from koch_runtime.threads import ThreadLayout
from koch_runtime.torch_runtime import PolicyRuntime
from kuavo_train.evaluate import main as eval_main
from kuavo_train.export import ATOL, RTOL, export
from kuavo_train.train import main as train_main

pytestmark = [pytest.mark.video, pytest.mark.training]


def test_held_out_evaluation_and_act_onnx_export(reach_dataset: SyntheticDataset, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train_main([
        "--config", "train/act_sim.yaml", f"dataset.root={reach_dataset.root}",
        f"dataset.repo_id={reach_dataset.repo_id}", f"output_dir={run}", *TINY_ACT, "steps=2", "batch_size=4",
        "num_workers=0", "dataset.val_episodes=1", "val_every=2", "val_batches=1", "dataset.resize=[48, 64]",
    ]) == 0
    val = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if "val_loss" in line]
    assert len(val) == 1 and np.isfinite(val[0]["val_loss"])

    checkpoint = run / "checkpoints" / "last"
    assert eval_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert len(report["episodes"]) == 1 and report["frames"] == reach_dataset.frames_per_episode
    assert list(report["mae_per_joint"]) == JOINTS and len(report["mse_per_step"]) == 4  # chunk_size
    assert report["mse"] > 0 and all(np.isfinite(v) for v in report["mae_per_step"])
    assert (tmp_path / "eval" / "eval.png").stat().st_size > 1000

    # ACT as one ONNX graph, exported and checked at the end of training; the factory picks onnxruntime
    # when the export exists, unless told to run PyTorch, and refuses to run ONNX without one.
    pytorch = PolicyRuntime.load(checkpoint)
    assert isinstance(load_runtime(checkpoint), OnnxRuntime)
    assert isinstance(load_runtime(checkpoint, kind=RuntimeKind.PYTORCH), PolicyRuntime)
    shutil.rmtree(find_onnx_dir(checkpoint))
    assert isinstance(load_runtime(checkpoint), PolicyRuntime)
    with pytest.raises(CheckpointError, match="no ONNX export beside it.*kuavo_export --checkpoint.*runtime:=pytorch"):
        load_runtime(checkpoint, kind=RuntimeKind.ONNX)
    export(checkpoint)
    onnx = load_runtime(checkpoint, kind=RuntimeKind.ONNX)
    assert isinstance(onnx, OnnxRuntime) and onnx.n_action_steps == pytorch.n_action_steps
    rng = np.random.default_rng(0)
    # The robot sends the camera's native size: both runtimes apply the checkpoint's resize.
    observation = {"observation.state": rng.normal(size=6).astype(np.float32),
                   "observation.images.head": rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)}
    np.testing.assert_allclose(onnx.predict_chunk(observation), pytorch.predict_chunk(observation),
                               atol=ATOL * 10, rtol=RTOL)  # robot units (radians): unnormalising scales errors
    # One graph from the camera's uint8 pixels to robot units: no Python processor runs on the tick.
    graph_inputs = {i.name: i.type for i in onnx.sessions["policy"].get_inputs()}
    assert graph_inputs == {"observation.state": "tensor(float)", "observation.images.head": "tensor(uint8)"}
    with pytest.raises(PolicyInputError, match="observation.images.head: expected a uint8 image of shape"):
        onnx.predict_chunk({**observation, "observation.images.head": np.zeros((48, 64, 3), np.uint8)})
    with pytest.raises(PolicyInputError, match=r"observation.state: contains non-finite values \[nan"):
        onnx.predict_chunk({**observation, "observation.state": np.full(6, np.nan, np.float32)})
    with pytest.raises(PolicyInputError, match=r"observation lacks \['observation.state'\]"):
        onnx.predict_chunk({"observation.images.head": observation["observation.images.head"]})

    # The pool is pinned, one thread per core after the first, for onnxruntime's default count and for an
    # explicit one (onnxruntime pins only the count it picks itself); the first core is left to the
    # thread that calls the runtime (`caller_cpus`, where the node's inference worker runs).
    if ThreadLayout.for_threads(2).caller_cpus:  # at least two cores
        assert onnx.caller_cpus == ThreadLayout.for_threads(0).caller_cpus
        layout = ThreadLayout.for_threads(2)
        threads_before = set(thread_cpus())
        two_threads = load_runtime(checkpoint, threads=2)
        assert two_threads.caller_cpus == layout.caller_cpus
        np.testing.assert_allclose(two_threads.predict_chunk(observation), onnx.predict_chunk(observation), atol=1e-5)
        pool_cpus = {int(cpu) - 1 for cpu in layout.pool_affinities.split(",")}
        assert pool_cpus.isdisjoint(layout.caller_cpus)
        assert pool_cpus in [cpus for tid, cpus in thread_cpus().items() if tid not in threads_before]

    # An export in the older layout (normalised graph inputs) is refused with the command that fixes it.
    manifest_path = find_onnx_dir(checkpoint) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "format"}))
    with pytest.raises(ValueError, match="older kuavo_export.*kuavo_export --checkpoint"):
        load_runtime(checkpoint)


def thread_cpus() -> dict[int, set[int]]:
    """The CPUs each thread of this process may run on (Linux)."""
    cpus = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            cpus[int(task.name)] = os.sched_getaffinity(int(task.name))
    return cpus


def test_diffusion_onnx_encoder_and_denoiser_match_pytorch(rgbd_dataset: SyntheticDataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    runtime = tiny(rgbd_dataset, "rgbd_diffusion", {**TINY_RGBD, "denoiser": "transformer"}, RGBD)
    runtime.save(tmp_path / "pretrained_model")
    manifest = json.loads((export(tmp_path) / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"encoder", "denoiser"}
    assert all(e <= ATOL for e in manifest["max_abs_error"].values())

    pytorch, onnx = PolicyRuntime.load(tmp_path), load_runtime(tmp_path)
    assert isinstance(onnx, OnnxRuntime)
    rng = np.random.default_rng(1)
    for _ in range(2):  # two observations: the second uses the n_obs_steps=2 history
        observation = {"observation.state": rng.normal(size=6).astype(np.float32)}
        observation["observation.images.head"] = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        observation["observation.images.head_depth"] = rng.integers(0, 2000, (48, 64, 1), dtype=np.uint16)
        torch.manual_seed(7)  # same initial noise and DDPM step noise for the host loop and PyTorch
        expected = pytorch.predict_chunk(observation)
        torch.manual_seed(7)
        np.testing.assert_allclose(onnx.predict_chunk(observation), expected, atol=ATOL * 10, rtol=RTOL)


def test_smolvla_onnx_prefix_and_flow_step_match_pytorch(rgbd_dataset: SyntheticDataset, tmp_path: Path) -> None:
    """SmolVLA's export: the prefix cache and flow-matching step graphs with the Euler loop in host code give
    PyTorch's chunk for instructions of any length, at the deploy's choice of integration steps."""
    from test_policies import RGB, TINY_SMOLVLA

    from koch_runtime.build import build_policy
    from koch_runtime.vlm_backbone import BACKBONE_DIR, SmolVLMBackbone, build_backbone, smolvla_overrides
    from kuavo_train.config import DatasetConfig
    from kuavo_train.data import load_metadata

    torch.manual_seed(0)
    meta = load_metadata(DatasetConfig(repo_id=rgbd_dataset.repo_id, root=str(rgbd_dataset.root)))
    spec = SmolVLMBackbone()
    backbone = build_backbone(tmp_path / BACKBONE_DIR, [str(t) for t in meta.tasks.index], spec)
    built = build_policy("smolvla", {**smolvla_overrides(backbone, spec), **TINY_SMOLVLA}, meta.features,
                         meta.stats, RGB)
    built.save(tmp_path / "checkpoint" / "pretrained_model")
    manifest = json.loads((export(tmp_path / "checkpoint") / "manifest.json").read_text())
    assert manifest["kind"] == "flow_matching" and set(manifest["graphs"]) == {"prefix", "denoise"}

    pytorch, onnx = PolicyRuntime.load(tmp_path / "checkpoint"), load_runtime(tmp_path / "checkpoint")
    assert isinstance(onnx, OnnxRuntime) and onnx.needs_task and not onnx.supports_guidance
    observation = {"observation.state": np.linspace(-1, 1, 6).astype(np.float32),
                   "observation.images.head": np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)}
    with pytest.raises(PolicyInputError, match="task instruction"):
        onnx.predict_chunk(observation)
    for task, steps in (("reach the red target", 3), ("move the arm slowly to the left", 1)):
        pytorch.task = onnx.task = task
        pytorch.flow_steps = onnx.flow_steps = steps
        torch.manual_seed(7)  # the same starting noise
        expected = pytorch.predict_chunk(observation)
        torch.manual_seed(7)
        np.testing.assert_allclose(onnx.predict_chunk(observation), expected, atol=ATOL * 10, rtol=RTOL)
