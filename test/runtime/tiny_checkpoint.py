"""A tiny real checkpoint for the runtime's tests: an ACT on joint state + a 2-D environment state.

No camera, so no ResNet backbone: the checkpoint is a few kilobytes and loads in a fraction of a second,
yet it is written by the same `build_policy` + `PolicyRuntime.save` that training uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
INPUTS = ["observation.state", "observation.environment_state"]
TINY_ACT: dict[str, Any] = {"chunk_size": 2, "n_action_steps": 2, "dim_model": 8, "n_heads": 2, "dim_feedforward": 8,
                            "n_encoder_layers": 1, "n_decoder_layers": 1, "use_vae": False}


def tiny_observation() -> dict[str, np.ndarray]:
    return {"observation.state": np.zeros(6, np.float32), "observation.environment_state": np.zeros(2, np.float32)}


def save_tiny_checkpoint(folder: Path) -> Path:
    """Build the tiny ACT (normalising with unit stats) and save it as a pretrained_model `folder`."""
    from koch_runtime.build import build_policy

    def stats(n: int) -> dict[str, np.ndarray]:
        return {"mean": np.zeros(n), "std": np.ones(n), "min": -np.ones(n), "max": np.ones(n)}

    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "observation.environment_state": {"dtype": "float32", "shape": (2,), "names": ["u", "v"]},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINTS},
    }
    runtime = build_policy("act", TINY_ACT, features, {key: stats(f["shape"][0]) for key, f in features.items()},
                           INPUTS)
    runtime.save(folder)
    return folder
