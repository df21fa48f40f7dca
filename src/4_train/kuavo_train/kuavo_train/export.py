"""`kuavo_export --checkpoint <run>/checkpoints/last`: ONNX export checked against PyTorch.

ACT -> one graph (normalised observation -> normalised action chunk). Diffusion / rgbd_diffusion ->
an observation encoder graph (n_obs_steps history -> conditioning) and a single denoiser step
graph; the scheduler loop stays in host code (koch_common.onnx_runtime). After writing, every graph
is run with onnxruntime on a real-shaped input and compared with PyTorch: the export fails unless
|onnx - torch| <= ATOL + RTOL * |torch| everywhere (float32; see the constants).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from koch_common.onnx_runtime import ONNX_DIR, ONNX_MANIFEST, providers_for
from koch_common.policy_runtime import PolicyRuntime, resolve_pretrained_dir, with_stacked_cameras

# Agreement required between onnxruntime and PyTorch outputs (normalised units, float32).
ATOL = 1e-4
RTOL = 1e-3
OPSET = 17


def _sample_inputs(runtime: PolicyRuntime, history: int | None, seed: int = 0) -> dict[str, Any]:
    """Random normalised inputs of the policy's shapes: (1, ...) or (1, history, ...)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, feature in runtime.input_features.items():
        shape = (1, *feature.shape) if history is None else (1, history, *feature.shape)
        out[key] = torch.randn(shape, generator=generator)
    return out


def _check(name: str, onnx_out: np.ndarray, torch_out: np.ndarray) -> float:
    error = float(np.max(np.abs(onnx_out - torch_out)))
    if not np.allclose(onnx_out, torch_out, atol=ATOL, rtol=RTOL):
        raise RuntimeError(f"{name}: onnxruntime and PyTorch disagree (max |diff| {error:.2e} > atol {ATOL} "
                           f"+ rtol {RTOL}); the graph is not exported faithfully")
    return error


def export(checkpoint: Path | str, output: Path | str | None = None) -> Path:
    """Write the ONNX graphs + manifest for `checkpoint`; returns the export folder."""
    import onnxruntime as ort
    import torch

    pretrained = resolve_pretrained_dir(checkpoint)
    out_dir = Path(output) if output else pretrained / ONNX_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    runtime = PolicyRuntime.load(pretrained, "cpu")
    policy = runtime.policy.eval()
    keys = list(runtime.input_features)
    graphs: dict[str, str] = {}
    errors: dict[str, float] = {}

    def write(name: str, module: torch.nn.Module, args: tuple[Any, ...], input_names: list[str]) -> None:
        path = out_dir / f"{name}.onnx"
        # A fresh wrapper is in training mode and torch.onnx.export restores that mode on every child
        # afterwards: keep the whole policy in eval mode, or dropout would perturb the reference outputs.
        module.eval()
        with torch.no_grad():
            expected = module(*args).numpy()
            torch.onnx.export(module, args, str(path), input_names=input_names, output_names=["output"],
                              opset_version=OPSET, dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in [*input_names, "output"]})
        module.eval()
        session = ort.InferenceSession(str(path), providers=providers_for("cpu"))
        got = session.run(None, {n: a.numpy() for n, a in zip(input_names, args, strict=True)})[0]
        errors[name] = _check(name, got, expected)
        graphs[name] = path.name

    if hasattr(policy, "diffusion"):
        kind = "diffusion"
        steps = int(policy.config.n_obs_steps)
        history = _sample_inputs(runtime, steps)
        write("encoder", _Encoder(policy, keys), tuple(history[k] for k in keys), keys)
        with torch.no_grad():
            cond = _Encoder(policy, keys).eval()(*(history[k] for k in keys))
        action_dim = policy.config.output_features["action"].shape[0]
        sample = torch.randn(1, policy.config.horizon, action_dim, generator=torch.Generator().manual_seed(1))
        timestep = torch.tensor([policy.config.num_train_timesteps // 2], dtype=torch.long)
        write("denoiser", _Denoiser(policy), (sample, timestep, cond), ["sample", "timestep", "global_cond"])
    elif policy.config.type == "act":
        kind = "act"
        inputs = _sample_inputs(runtime, None)
        write("policy", _Act(policy, keys), tuple(inputs[k] for k in keys), keys)
    else:
        raise ValueError(f"ONNX export supports act, diffusion and rgbd_diffusion, not {policy.config.type!r}")
    manifest = {
        "kind": kind, "type": policy.config.type, "graphs": graphs, "inputs": keys, "opset": OPSET,
        "pretrained_model": str(Path("..") if out_dir == pretrained / ONNX_DIR else pretrained),
        "tolerance": {"atol": ATOL, "rtol": RTOL}, "max_abs_error": errors,
    }
    (out_dir / ONNX_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out_dir


class _Act:
    """Callable module wrapper: positional normalised inputs -> ACT's normalised action chunk."""

    def __new__(cls, policy: Any, keys: list[str]) -> Any:
        import torch

        class Act(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.policy = policy

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                batch = dict(zip(keys, tensors, strict=True))
                if policy.config.image_features:
                    batch["observation.images"] = [batch[k] for k in policy.config.image_features]
                return self.policy.model(batch)[0]

        return Act()


class _Encoder:
    """History inputs (1, S, ...) -> the diffusion conditioning vector, as the policy computes it."""

    def __new__(cls, policy: Any, keys: list[str]) -> Any:
        import torch

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.diffusion = policy.diffusion

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                batch = dict(zip(keys, tensors, strict=True))
                if not hasattr(policy, "observe"):  # LeRobot diffusion: cameras stacked in one tensor
                    batch = with_stacked_cameras(batch, policy.config)
                return self.diffusion._prepare_global_conditioning(batch)

        return Encoder()


class _Denoiser:
    def __new__(cls, policy: Any) -> Any:
        import torch

        class Denoiser(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.unet = policy.diffusion.unet

            def forward(self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
                return self.unet(sample, timestep, global_cond=global_cond)

        return Denoiser()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kuavo_export", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="<run>/checkpoints/last (or a pretrained_model folder)")
    parser.add_argument("--output", default=None, help="export folder (default: <pretrained_model>/onnx)")
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.output)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"kuavo_export: error: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((out / ONNX_MANIFEST).read_text())
    print(f"wrote {out} ({', '.join(manifest['graphs'].values())}); max |onnx - torch| "
          f"{manifest['max_abs_error']} within atol {ATOL} + rtol {RTOL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
