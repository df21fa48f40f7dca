"""The one entry point the robot uses to load a policy: the ONNX export when there is one, else PyTorch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from koch_common.checkpoint_layout import RuntimeKind
from koch_common.robot import load_koch
from koch_runtime.checkpoint_trust import CheckpointError, check_joint_names
from koch_runtime.onnx_runtime import ONNX_DIR, ONNX_MANIFEST, OnnxRuntime, find_onnx_dir
from koch_runtime.protocols import ChunkPredictor
from koch_runtime.torch_runtime import PolicyRuntime


def robot_joint_names() -> list[str]:
    """The joints the robot's commands address, in order: koch.yaml's follower joints."""
    return list(load_koch().follower.names)


def load_runtime(path: Path | str, device: str = "cpu", threads: int = 0,
                 joint_names: Sequence[str] | None = None, kind: RuntimeKind = RuntimeKind.AUTO) -> ChunkPredictor:
    """The runtime for `path`, both offering the ChunkPredictor interface. `kind` AUTO: OnnxRuntime when it
    holds an ONNX export (`onnx/manifest.json`, written at the end of training or by `kuavo_export`), else
    the PyTorch PolicyRuntime; ONNX: the export or a CheckpointError saying how to make one; PYTORCH: the
    PolicyRuntime even where an export exists.

    `path` may be a pretrained_model folder, a step folder / `last` link, or an export folder.
    `threads` > 0 caps the CPU threads inference uses (onnxruntime's session, or torch's process-wide
    intra-op pool); 0 keeps the library's default.
    `joint_names`: the joints the robot drives, in order (default: koch.yaml's follower joints). The
    checkpoint's action joints (and state joints, when the state is an input) must be exactly these, or
    loading fails naming both lists (`checkpoint_trust.check_joint_names`).
    """
    kind = RuntimeKind(kind)
    onnx_dir = None if kind is RuntimeKind.PYTORCH else find_onnx_dir(Path(path).expanduser())
    if kind is RuntimeKind.ONNX and onnx_dir is None:
        raise CheckpointError(f"runtime onnx: {path} has no ONNX export beside it ({ONNX_DIR}/{ONNX_MANIFEST}); "
                              f"make one with `kuavo_export --checkpoint {path}`, or run it with runtime:=pytorch")
    runtime: OnnxRuntime | PolicyRuntime
    if onnx_dir is not None and (onnx_dir / ONNX_MANIFEST).is_file():
        runtime = OnnxRuntime.load(onnx_dir, device, threads)
    else:
        if threads > 0:
            torch.set_num_threads(threads)
        runtime = PolicyRuntime.load(path, device)
    robot = robot_joint_names() if joint_names is None else joint_names
    check_joint_names(runtime.feature_specs, runtime.input_features, robot, path)
    return runtime
