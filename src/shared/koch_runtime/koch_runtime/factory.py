"""The one entry point the robot uses to load a policy: the ONNX export when there is one, else PyTorch."""

from __future__ import annotations

from pathlib import Path

import torch

from koch_runtime.onnx_runtime import ONNX_MANIFEST, OnnxRuntime, find_onnx_dir
from koch_runtime.protocols import ChunkPredictor
from koch_runtime.torch_runtime import PolicyRuntime


def load_runtime(path: Path | str, device: str = "cpu", threads: int = 0) -> ChunkPredictor:
    """The runtime for `path`: OnnxRuntime when it holds an ONNX export (`onnx/manifest.json`, written by
    `kuavo_export`), else the PyTorch PolicyRuntime. Both offer the ChunkPredictor interface.

    `path` may be a pretrained_model folder, a step folder / `last` link, or an export folder.
    `threads` > 0 caps the CPU threads inference uses (onnxruntime's session, or torch's process-wide
    intra-op pool); 0 keeps the library's default.
    """
    onnx_dir = find_onnx_dir(Path(path).expanduser())
    if onnx_dir is not None and (onnx_dir / ONNX_MANIFEST).is_file():
        return OnnxRuntime.load(onnx_dir, device, threads)
    if threads > 0:
        torch.set_num_threads(threads)
    return PolicyRuntime.load(path, device)
