"""`kuavo_export --checkpoint <run>/checkpoints/last`: ONNX export checked against PyTorch.

ACT -> one graph from the robot's observation (uint8 images as recorded, float32 state) to the action
chunk in robot units: the PyTorch runtime's own pre-processing (`arrays_to_batch`: `/ 255`, resize,
crop), the checkpoint's LeRobot normaliser, the model and the unnormaliser, traced from the same code
into one graph, so the robot runs no Python between the observation and the actions.
Diffusion / rgbd_diffusion -> an observation encoder graph (normalised n_obs_steps history ->
conditioning) and a single denoiser step graph; the scheduler loop and the processors stay in host
code (koch_common.onnx_runtime), where 10-100 denoiser runs dwarf them. After writing, every graph is
run with onnxruntime on a real-shaped input and compared with PyTorch: the export fails unless
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

from koch_common.onnx_runtime import BATCH_AXIS, ONNX_DIR, ONNX_FORMAT, ONNX_MANIFEST, providers_for
from koch_common.policy_runtime import (
    IMAGE_PREFIX,
    PolicyRuntime,
    arrays_to_batch,
    resolve_pretrained_dir,
    with_stacked_cameras,
)

# Agreement required between onnxruntime and PyTorch outputs (float32; ACT in robot units, diffusion
# graphs in normalised units).
ATOL = 1e-4
RTOL = 1e-3
OPSET = 18  # Resize with antialias (the training resize) needs 18


def _sample_inputs(runtime: PolicyRuntime, history: int | None, seed: int = 0) -> dict[str, Any]:
    """Random normalised inputs of the policy's shapes: (1, ...) or (1, history, ...)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, feature in runtime.input_features.items():
        shape = (1, *feature.shape) if history is None else (1, history, *feature.shape)
        out[key] = torch.randn(shape, generator=generator)
    return out


def _sample_observation(runtime: PolicyRuntime, seed: int = 0) -> dict[str, Any]:
    """A random observation in `ObservationChecker`'s layout: uint8 (1, H, W, C) images as recorded,
    float32 (1, *shape) for the rest."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, feature in runtime.input_features.items():
        if key.startswith(IMAGE_PREFIX):
            shape = (1, *runtime.feature_specs[key]["shape"])
            out[key] = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        else:
            out[key] = torch.randn((1, *feature.shape), generator=generator)
    return out


def _register_antialiased_resize() -> None:
    """Export torch's antialiased bilinear resize (the training resize) as ONNX Resize-18.

    torch.onnx has no symbolic for it. `exclude_outside=1` renormalises the filter at the image
    border as torch does; the export's comparison with PyTorch checks the two agree.
    """
    import torch
    from torch.onnx import register_custom_op_symbolic, symbolic_helper

    @symbolic_helper.parse_args("v", "is", "i", "none")
    def resize(g: Any, image: Any, size: list[int], align_corners: int, scales: Any) -> Any:
        def const(value: Any, dtype: torch.dtype = torch.int64) -> Any:
            return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

        leading = g.op("Slice", g.op("Shape", image), const([0]), const([2]))  # batch, channels
        sizes = g.op("Concat", leading, const(list(size)), axis_i=0)
        empty = const([], torch.float32)
        return g.op("Resize", image, empty, empty, sizes, mode_s="linear", antialias_i=1, exclude_outside_i=1,
                    coordinate_transformation_mode_s="align_corners" if align_corners else "half_pixel")

    register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", resize, OPSET)


def _check(name: str, onnx_out: np.ndarray, torch_out: np.ndarray) -> float:
    error = float(np.max(np.abs(onnx_out - torch_out)))
    if not np.allclose(onnx_out, torch_out, atol=ATOL, rtol=RTOL):
        raise RuntimeError(f"{name}: onnxruntime and PyTorch disagree (max |diff| {error:.2e} > atol {ATOL} "
                           f"+ rtol {RTOL}); the graph is not exported faithfully")
    return error


def _write_graph(path: Path, module: Any, args: tuple[Any, ...], input_names: list[str]) -> float:
    """Export `module` to `path`, run it with onnxruntime on `args` and return the max |onnx - torch|
    (RuntimeError beyond the tolerance)."""
    import onnxruntime as ort
    import torch

    # A fresh wrapper is in training mode and torch.onnx.export restores that mode on every child
    # afterwards: keep the whole policy in eval mode, or dropout would perturb the reference outputs.
    module.eval()
    with torch.no_grad():
        expected = module(*args).numpy()
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=["output"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={n: {0: BATCH_AXIS} for n in [*input_names, "output"]})
    module.eval()
    session = ort.InferenceSession(str(path), providers=providers_for("cpu"))
    got = session.run(None, {n: a.numpy() for n, a in zip(input_names, args, strict=True)})[0]
    return _check(path.stem, got, expected)


def export(checkpoint: Path | str, output: Path | str | None = None) -> Path:
    """Write the ONNX graphs + manifest for `checkpoint`; returns the export folder."""
    import torch

    _register_antialiased_resize()
    pretrained = resolve_pretrained_dir(checkpoint)
    out_dir = Path(output) if output else pretrained / ONNX_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    runtime = PolicyRuntime.load(pretrained, "cpu")
    policy = runtime.policy.eval()
    keys = list(runtime.input_features)
    graphs: dict[str, str] = {}
    errors: dict[str, float] = {}

    def write(name: str, module: torch.nn.Module, args: tuple[Any, ...], input_names: list[str]) -> None:
        errors[name] = _write_graph(out_dir / f"{name}.onnx", module, args, input_names)
        graphs[name] = f"{name}.onnx"

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
        inputs = _sample_observation(runtime)
        write("policy", ActOnObservation(runtime, keys), tuple(inputs[k] for k in keys), keys)
    else:
        raise ValueError(f"ONNX export supports act, diffusion and rgbd_diffusion, not {policy.config.type!r}")
    manifest = {
        "format": ONNX_FORMAT, "kind": kind, "type": policy.config.type, "graphs": graphs, "inputs": keys,
        "opset": OPSET,
        "pretrained_model": str(Path("..") if out_dir == pretrained / ONNX_DIR else pretrained),
        "tolerance": {"atol": ATOL, "rtol": RTOL}, "max_abs_error": errors,
    }
    (out_dir / ONNX_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out_dir


class ActModel:
    """ACT alone: positional normalised inputs -> normalised action chunk (`export_act_model`)."""

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


class ActOnObservation:
    """Observation arrays (positional, `keys` order) -> action chunk in robot units: the PyTorch
    runtime's predict_chunk (arrays_to_batch, preprocessor, model, postprocessor) as one module."""

    def __new__(cls, runtime: PolicyRuntime, keys: list[str]) -> Any:
        import torch

        features, specs = runtime.config.input_features, runtime.feature_specs

        class ActOnObservation(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = ActModel(runtime.policy, keys)

            def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
                batch = runtime.preprocessor(arrays_to_batch(dict(zip(keys, arrays, strict=True)), features, specs))
                return runtime.postprocessor(self.model(*(batch[k] for k in keys)))

        return ActOnObservation()


def export_act_model(checkpoint: Path | str, path: Path | str) -> Path:
    """The ACT model alone as a graph (normalised inputs -> normalised chunk), without the deployed
    graph's pre/post-processing: the latency benchmark times it as the bare model forward."""
    runtime = PolicyRuntime.load(resolve_pretrained_dir(checkpoint), "cpu")
    keys = list(runtime.input_features)
    inputs = _sample_inputs(runtime, None)
    _write_graph(Path(path), ActModel(runtime.policy.eval(), keys), tuple(inputs[k] for k in keys), keys)
    return Path(path)


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
