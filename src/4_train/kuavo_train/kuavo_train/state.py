"""Training state (optimiser, scheduler, scaler, EMA, RNG, data position) as safetensors + JSON.

Nothing here uses pickle: tensors go to safetensors, everything else to JSON (read back as plain data,
naming no class), so resuming reads no code from the checkpoint; a truncated or corrupt file is a
one-line CheckpointError naming it. (The policy half of a checkpoint names classes and steps: that is
checked by koch_runtime.checkpoint_trust.)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

STATE_DIR = "training_state"
TENSORS_FILE = "training_state.safetensors"
JSON_FILE = "training_state.json"


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model: torch.nn.Module) -> None:
        import torch

        with torch.no_grad():
            for key, value in model.state_dict().items():
                shadow = self.shadow[key]
                if value.dtype.is_floating_point:
                    shadow.lerp_(value.detach(), 1.0 - self.decay)
                else:
                    shadow.copy_(value)

    def swap_into(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Load the EMA weights into `model`; returns the raw weights to restore afterwards."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        return raw


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    tensors["rng.python.state"] = torch.tensor(internal, dtype=torch.int64)
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, gauss]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss = meta["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng.python.state"].tolist()), gauss))


def save_training_state(
    directory: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    ema: EMA | None,
    progress: dict[str, Any],
) -> None:
    """Everything `load_training_state` needs to continue bit-for-bit."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model.{key}"] = value.detach().cpu().contiguous()
    if ema is not None:
        for key, value in ema.shadow.items():
            tensors[f"ema.{key}"] = value.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                opt_scalars.setdefault(str(index), {})[name] = value
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    meta = {
        "progress": progress,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": opt_scalars},
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
    }
    save_file(tensors, str(directory / TENSORS_FILE))
    (directory / JSON_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_training_state(
    directory: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    ema: EMA | None,
    device: str,
) -> dict[str, Any]:
    """Restore what `save_training_state` wrote; returns the saved progress (step, epoch, batch)."""
    from safetensors.torch import load_file

    from koch_runtime.checkpoint_trust import check_safetensors_file, read_json_object

    if not (directory / TENSORS_FILE).is_file() or not (directory / JSON_FILE).is_file():
        raise FileNotFoundError(
            f"{directory} lacks {TENSORS_FILE} / {JSON_FILE}; this checkpoint cannot be resumed "
            "(only the model was saved). Start a new run with a new output_dir"
        )
    # A truncated or corrupt file is a one-line error naming it (CheckpointError), not safetensors' own.
    check_safetensors_file(directory / TENSORS_FILE)
    tensors = load_file(str(directory / TENSORS_FILE))
    meta = read_json_object(directory / JSON_FILE, "resume from another checkpoint or start a new run")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    if ema is not None:
        shadow = {k[len("ema."):]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")}
        if set(shadow) != set(ema.shadow):
            raise ValueError(f"{directory} holds no EMA weights for this model; resume with the run's ema_decay")
        ema.shadow = shadow
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
    for index, scalars in meta["optimizer"]["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    if scaler is not None and meta["scaler"] is not None:
        scaler.load_state_dict(meta["scaler"])
    set_rng_state(tensors, meta["rng"])
    return meta["progress"]
