"""Names of a checkpoint's folders and files, for code that reads checkpoints without torch.

kuavo_train writes `<output_dir>/checkpoints/<step>/pretrained_model/` with the training config and
run record in TRAIN_CONFIG_FILE; kuavo_export writes `pretrained_model/onnx/manifest.json`. The
runtime (koch_runtime) and light readers such as `rollout`'s report both use these names.
"""

from __future__ import annotations

from pathlib import Path

from koch_common.enums import StrEnum

PRETRAINED_MODEL_DIR = "pretrained_model"
TRAIN_CONFIG_FILE = "kuavo_train_config.json"
ONNX_DIR = "onnx"
ONNX_MANIFEST = "manifest.json"


def pretrained_model_dir(path: Path) -> Path | None:
    """The pretrained_model folder that `path` (it, a step folder, or its ONNX export) belongs to."""
    for candidate in (path, path / PRETRAINED_MODEL_DIR, path.parent):
        if (candidate / TRAIN_CONFIG_FILE).is_file():
            return candidate
    return None


class RuntimeKind(StrEnum):
    """Which runtime runs a checkpoint on the robot (the policy node's `runtime` parameter)."""

    AUTO = "auto"        # its ONNX export when one is beside it (training writes one by default), else PyTorch
    ONNX = "onnx"        # the ONNX export, or refuse to start
    PYTORCH = "pytorch"  # the PyTorch checkpoint, even when an export is beside it
