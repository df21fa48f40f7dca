"""`kuavo_export --checkpoint <run>/checkpoints/last`: ONNX export checked against PyTorch.

ACT -> one graph from the robot's observation (uint8 images as recorded, float32 state) to the action
chunk in robot units: the PyTorch runtime's own pre-processing (`arrays_to_batch`: `/ 255`, resize,
crop), the checkpoint's LeRobot normaliser, the model and the unnormaliser, traced from the same code
into one graph, so the robot runs no Python between the observation and the actions.
Diffusion / rgbd_diffusion -> an observation encoder graph (normalised n_obs_steps history ->
conditioning) and a single denoiser step graph; the scheduler loop and the processors stay in host
code (koch_runtime.onnx_runtime), where 10-100 denoiser runs dwarf them.
SmolVLA -> a prefix graph (normalised images and state, the instruction's tokens -> the vision-language
model's key/value cache of the prefix) and one flow-matching step graph (noisy actions, time, that cache
-> velocity); the Euler integration, the tokenizer and the processors stay in host code, as for
diffusion. Real-Time Chunking's guidance differentiates through the step, which a graph does not:
guided SmolVLA runs with PyTorch (runtime:=pytorch). After writing, every graph is
run with onnxruntime on a real-shaped input and compared with PyTorch: the export fails unless
|onnx - torch| <= ATOL + RTOL * |torch| everywhere (float32; see the constants).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.smolvla.modeling_smolvla import make_att_2d_masks
from lerobot.utils.constants import OBS_IMAGES
from torch import nn
from torch.onnx import register_custom_op_symbolic, symbolic_helper

from koch_runtime.checkpoint import resolve_pretrained_dir
from koch_runtime.lerobot_compat import global_conditioning
from koch_runtime.observation import IMAGE_PREFIX, arrays_to_batch, is_depth_spec, with_stacked_cameras
from koch_runtime.onnx_runtime import (
    BATCH_AXIS,
    KV_PREFIX,
    ONNX_DIR,
    ONNX_FORMAT,
    ONNX_MANIFEST,
    PREFIX_PAD,
    TOKEN_MASK_KEY,
    TOKENS_KEY,
    pad_tokens,
    providers_for,
)
from koch_runtime.torch_runtime import PolicyRuntime
from kuavo_train.errors import WRITE_FAILURES, OutputError, check_writable, is_write_failure, reason

# Agreement required between onnxruntime and PyTorch outputs (float32; ACT in robot units, diffusion
# graphs in normalised units).
ATOL = 1e-4
RTOL = 1e-3
OPSET = 18  # Resize with antialias (the training resize) needs 18


def _sample_inputs(runtime: PolicyRuntime, history: int | None, seed: int = 0) -> dict[str, Any]:
    """Random normalised inputs of the policy's shapes: (1, ...) or (1, history, ...)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, feature in runtime.input_features.items():
        shape = (1, *feature.shape) if history is None else (1, history, *feature.shape)
        out[key] = torch.randn(shape, generator=generator)
    return out


def _sample_observation(runtime: PolicyRuntime, seed: int = 0) -> dict[str, Any]:
    """A random observation in `ObservationChecker`'s layout: uint8 (1, H, W, C) images and int32
    (1, H, W, 1) depth maps as recorded, float32 (1, *shape) for the rest."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, feature in runtime.input_features.items():
        spec = runtime.feature_specs.get(key)
        if spec is not None and is_depth_spec(spec):  # millimetres, handed on as int32 (ObservationChecker)
            out[key] = torch.randint(0, 2000, (1, *spec["shape"]), generator=generator, dtype=torch.int32)
        elif key.startswith(IMAGE_PREFIX):
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


def _register_boolean_cumsum() -> None:
    """Export torch.cumsum of a bool tensor (SmolVLA's position ids from its padding masks): torch sums
    booleans as int64, ONNX CumSum takes numbers only, and torch.onnx casts nothing."""
    @symbolic_helper.parse_args("v", "i", "none")
    def cumsum(g: Any, values: Any, dim: int, dtype: Any) -> Any:
        if values.type().scalarType() == "Bool":
            values = g.op("Cast", values, to_i=7)  # TensorProto.INT64
        return g.op("CumSum", values, g.op("Constant", value_t=torch.tensor(dim, dtype=torch.long)))

    register_custom_op_symbolic("aten::cumsum", cumsum, OPSET)


def _check(name: str, onnx_out: np.ndarray, torch_out: np.ndarray) -> float:
    error = float(np.max(np.abs(onnx_out - torch_out)))
    if not np.allclose(onnx_out, torch_out, atol=ATOL, rtol=RTOL):
        raise RuntimeError(f"{name}: onnxruntime and PyTorch disagree (max |diff| {error:.2e} > atol {ATOL} "
                           f"+ rtol {RTOL}); the graph is not exported faithfully")
    return error


def _outputs(module: Any, args: tuple[Any, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*args)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _write_graph(path: Path, module: Any, args: tuple[Any, ...], input_names: list[str],
                 output_names: Sequence[str] = ("output",), axes: dict[str, dict[int, str]] | None = None,
                 other_args: Sequence[tuple[Any, ...]] = (),
                 tracing: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> float:
    """Export `module` to `path`, run it with onnxruntime on `args` (and on each of `other_args`, inputs of
    other sizes along the free `axes`) and return the max |onnx - torch| (RuntimeError beyond the tolerance).
    `axes`: free dimensions per input / output name besides the leading batch axis. `tracing`: a context
    the export alone runs in (an exportable stand-in for some code); the check runs the module as it is."""
    # A fresh wrapper is in training mode and torch.onnx.export restores that mode on every child
    # afterwards: keep the whole policy in eval mode, or dropout would perturb the reference outputs.
    module.eval()
    dynamic = {n: {0: BATCH_AXIS, **(axes or {}).get(n, {})} for n in [*input_names, *output_names]}
    with torch.no_grad(), tracing():
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=list(output_names),
                          opset_version=OPSET, dynamo=False, dynamic_axes=dynamic)
    module.eval()
    session = ort.InferenceSession(str(path), providers=providers_for("cpu"))
    error = 0.0
    for inputs in (args, *other_args):
        got = session.run(None, {n: a.numpy() for n, a in zip(input_names, inputs, strict=True)})
        for name, out, expected in zip(output_names, got, _outputs(module, inputs), strict=True):
            error = max(error, _check(f"{path.stem} {name}", out.astype(np.float64), expected.astype(np.float64)))
    return error


def export(checkpoint: Path | str, output: Path | str | None = None) -> Path:
    """Write the ONNX graphs + manifest for `checkpoint`; returns the export folder."""
    _register_antialiased_resize()
    _register_boolean_cumsum()
    pretrained = resolve_pretrained_dir(checkpoint)
    runtime = PolicyRuntime.load(pretrained, "cpu")  # checked: a refused checkpoint is never exported
    out_dir = Path(output) if output else pretrained / ONNX_DIR
    check_writable(out_dir, "the export folder", "--output DIR")
    policy = runtime.policy.eval()
    keys = list(runtime.input_features)
    graphs: dict[str, str] = {}
    errors: dict[str, float] = {}

    def write(name: str, module: nn.Module, args: tuple[Any, ...], input_names: list[str],
              output_names: Sequence[str] = ("output",), axes: dict[str, dict[int, str]] | None = None,
              other_args: Sequence[tuple[Any, ...]] = (),
              tracing: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        errors[name] = _write_graph(out_dir / f"{name}.onnx", module, args, input_names, output_names, axes,
                                    other_args, tracing)
        graphs[name] = f"{name}.onnx"

    if hasattr(policy, "diffusion"):
        kind = "diffusion"
        steps = int(policy.config.n_obs_steps)
        history = _sample_inputs(runtime, steps)
        write("encoder", ObservationEncoder(policy, keys), tuple(history[k] for k in keys), keys)
        with torch.no_grad():
            cond = ObservationEncoder(policy, keys).eval()(*(history[k] for k in keys))
        action_dim = policy.config.output_features["action"].shape[0]
        sample = torch.randn(1, policy.config.horizon, action_dim, generator=torch.Generator().manual_seed(1))
        timestep = torch.tensor([policy.config.num_train_timesteps // 2], dtype=torch.long)
        write("denoiser", DenoiserStep(policy), (sample, timestep, cond), ["sample", "timestep", "global_cond"])
    elif policy.config.type == "smolvla":
        kind = "flow_matching"
        _write_smolvla(runtime, write)
    elif policy.config.type == "act":
        kind = "act"
        inputs = _sample_observation(runtime)
        write("policy", ActOnObservation(runtime, keys), tuple(inputs[k] for k in keys), keys)
    else:
        raise ValueError(f"ONNX export supports {', '.join(EXPORTABLE_TYPES)}, not {policy.config.type!r}")
    manifest = {
        "format": ONNX_FORMAT, "kind": kind, "type": policy.config.type, "graphs": graphs, "inputs": keys,
        "opset": OPSET,
        "pretrained_model": str(Path("..") if out_dir == pretrained / ONNX_DIR else pretrained),
        "tolerance": {"atol": ATOL, "rtol": RTOL}, "max_abs_error": errors,
    }
    (out_dir / ONNX_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out_dir


# The policy types `export` writes graphs for.
EXPORTABLE_TYPES = ("act", "diffusion", "rgbd_diffusion", "smolvla")


def export_after_training(checkpoint: Path, policy_type: str) -> Path | None:
    """The end of a training run: the checked export beside `checkpoint`, or None (said on stderr) where the
    type has none or the export failed its check; the checkpoint stands either way and the robot then runs
    it with PyTorch. A failed export leaves no graph behind for the runtime to pick up."""
    if policy_type not in EXPORTABLE_TYPES:
        print(f"no ONNX export for {policy_type} (exported: {', '.join(EXPORTABLE_TYPES)}): the robot runs the "
              "PyTorch checkpoint", file=sys.stderr)
        return None
    out_dir = resolve_pretrained_dir(checkpoint) / ONNX_DIR
    try:
        out = export(checkpoint)
    except (ValueError, RuntimeError) as exc:
        shutil.rmtree(out_dir, ignore_errors=True)
        print(f"ONNX export failed its check ({' '.join(str(exc).split())}): removed it; the robot runs the "
              "PyTorch checkpoint", file=sys.stderr)
        return None
    manifest = json.loads((out / ONNX_MANIFEST).read_text(encoding="utf-8"))
    print(f"ONNX export: {out} (max |onnx - torch| {manifest['max_abs_error']}); the robot runs it by default "
          "(policy node runtime:=auto)", file=sys.stderr)
    return out


class ActModel(nn.Module):
    """ACT alone: positional normalised inputs -> normalised action chunk (`export_act_model`)."""

    def __init__(self, policy: PreTrainedPolicy, keys: list[str]) -> None:
        super().__init__()
        self.policy = policy
        self.keys = list(keys)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch: dict[str, Any] = dict(zip(self.keys, tensors, strict=True))
        if self.policy.config.image_features:
            batch[OBS_IMAGES] = [batch[k] for k in self.policy.config.image_features]
        chunk: torch.Tensor = self.policy.model(batch)[0]
        return chunk


class ActOnObservation(nn.Module):
    """Observation arrays (positional, `keys` order) -> action chunk in robot units: the PyTorch
    runtime's predict_chunk (arrays_to_batch, preprocessor, model, postprocessor) as one module."""

    def __init__(self, runtime: PolicyRuntime, keys: list[str]) -> None:
        super().__init__()
        self.model = ActModel(runtime.policy, keys)
        self.keys = list(keys)
        # LeRobot's processor pipelines are not modules: plain attributes, traced through when called.
        self.preprocessor, self.postprocessor = runtime.preprocessor, runtime.postprocessor
        self.features, self.specs = runtime.config.input_features, runtime.feature_specs

    def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
        batch = self.preprocessor(arrays_to_batch(dict(zip(self.keys, arrays, strict=True)), self.features,
                                                  self.specs))
        chunk: torch.Tensor = self.postprocessor(self.model(*(batch[k] for k in self.keys)))
        return chunk


def export_act_model(checkpoint: Path | str, path: Path | str) -> Path:
    """The ACT model alone as a graph (normalised inputs -> normalised chunk), without the deployed
    graph's pre/post-processing: the latency benchmark times it as the bare model forward."""
    runtime = PolicyRuntime.load(resolve_pretrained_dir(checkpoint), "cpu")
    keys = list(runtime.input_features)
    inputs = _sample_inputs(runtime, None)
    _write_graph(Path(path), ActModel(runtime.policy.eval(), keys), tuple(inputs[k] for k in keys), keys)
    return Path(path)


class ObservationEncoder(nn.Module):
    """History inputs (1, S, ...) -> the diffusion conditioning vector, as the policy computes it."""

    def __init__(self, policy: PreTrainedPolicy, keys: list[str]) -> None:
        super().__init__()
        self.diffusion = policy.diffusion
        self.keys = list(keys)
        self.config = policy.config
        # LeRobot's diffusion reads every camera stacked in one tensor; rgbd_diffusion (which has
        # `observe`) keeps them apart.
        self.stack_cameras = not hasattr(policy, "observe")

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.keys, tensors, strict=True))
        if self.stack_cameras:
            batch = with_stacked_cameras(batch, self.config)
        return global_conditioning(self.diffusion, batch)


class DenoiserStep(nn.Module):
    """One denoising step: (noisy sample, timestep, conditioning) -> the denoiser's output."""

    def __init__(self, policy: PreTrainedPolicy) -> None:
        super().__init__()
        self.unet = policy.diffusion.unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.unet(sample, timestep, global_cond=global_cond)
        return output


def _write_smolvla(runtime: PolicyRuntime, write: Any) -> None:
    """SmolVLA's prefix and flow-matching step graphs (the instruction padded to tokenizer_max_length tokens),
    checked on two instructions of different lengths."""
    policy = runtime.policy
    if policy.config.adapt_to_pi_aloha:
        raise ValueError("ONNX export of SmolVLA with adapt_to_pi_aloha is not supported: run it with PyTorch")
    image_keys = list(policy.config.image_features)
    inputs = [OBS_STATE_KEY, TOKENS_KEY, TOKEN_MASK_KEY, *image_keys]
    samples = [_sample_prefix_inputs(runtime, task) for task in ("pick up the cube", "move the arm to the left")]
    prefix = SmolVLAPrefix(policy, image_keys).eval()
    with torch.no_grad():
        cache = [prefix(*sample) for sample in samples]
    kv_names = [f"{KV_PREFIX}{i}" for i in range(len(cache[0]) - 1)]
    write("prefix", prefix, samples[0], inputs, [PREFIX_PAD, *kv_names], None, samples[1:],
          functools.partial(full_image_position_ids, policy))
    generator = torch.Generator().manual_seed(1)
    x_t = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, generator=generator)
    step = SmolVLAStep(policy, prefix.kv_layers).eval()
    write("denoise", step, (x_t, torch.tensor([0.7]), *cache[0]), ["x_t", "time", PREFIX_PAD, *kv_names],
          ["v_t"], None, [(x_t, torch.tensor([0.3]), *cache[1])])


OBS_STATE_KEY = "observation.state"


def _sample_prefix_inputs(runtime: PolicyRuntime, task: str) -> tuple[torch.Tensor, ...]:
    """The prefix graph's inputs for a random observation and `task`, through the checkpoint's processors."""
    observation = {k: v[0].numpy() for k, v in _sample_observation(runtime).items()}
    batch: dict[str, Any] = runtime.check_observation.batch(observation)
    batch["task"] = task
    with torch.no_grad():
        processed = pad_tokens(runtime.preprocessor(batch), int(runtime.config.tokenizer_max_length))
    image_keys = list(runtime.policy.config.image_features)
    return tuple(processed[k] for k in (OBS_STATE_KEY, TOKENS_KEY, TOKEN_MASK_KEY, *image_keys))


@contextlib.contextmanager
def full_image_position_ids(policy: PreTrainedPolicy) -> Iterator[None]:
    """SmolVLM's vision embeddings with the position ids of a whole image as a constant.

    transformers computes them per image from its patch mask (bucketize + scatter), which torch.onnx
    exports with a float index. SmolVLA always feeds whole images (resized with padding to the tower's
    size), whose ids are one fixed list: read here from transformers' own code on a whole image (its
    float bucketing repeats some ids, which the model was trained with). The export's check against
    PyTorch (the original code) confirms it.
    """
    embeddings = policy.model.vlm_with_expert.get_vlm_model().vision_model.embeddings
    side = int(embeddings.num_patches_per_side)
    seen: list[torch.Tensor] = []
    hook = embeddings.position_embedding.register_forward_pre_hook(lambda _, args: seen.append(args[0][:1].clone()))
    with torch.no_grad():
        embeddings(torch.zeros(1, 3, side * embeddings.patch_size, side * embeddings.patch_size),
                   torch.ones(1, side, side, dtype=torch.bool))
    hook.remove()
    positions = seen[0]

    def whole_image(pixel_values: torch.Tensor, patch_attention_mask: Any = None) -> torch.Tensor:
        patches = embeddings.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        return patches + embeddings.position_embedding(positions)

    embeddings.forward = whole_image
    try:
        yield
    finally:
        del embeddings.forward  # the class's again


class SmolVLAPrefix(nn.Module):
    """(normalised state, instruction tokens and mask, normalised images) -> (prefix padding mask, the key and
    value of every layer's cache), as SmolVLA's sample_actions computes them before its denoising loop."""

    def __init__(self, policy: PreTrainedPolicy, image_keys: list[str]) -> None:
        super().__init__()
        self.policy = policy
        self.image_keys = list(image_keys)
        self.kv_layers: list[int] = []

    def forward(self, state: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor,
                *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = {OBS_STATE_KEY: state, **dict(zip(self.image_keys, images, strict=True))}
        pixels, pixel_masks = self.policy.prepare_images(batch)
        model = self.policy.model
        embeddings, pad, att = model.embed_prefix(pixels, pixel_masks, tokens, token_mask,
                                                  state=self.policy.prepare_state(batch))
        _, cache = model.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad, att), position_ids=torch.cumsum(pad, dim=1) - 1,
            past_key_values=None, inputs_embeds=[embeddings, None], use_cache=True, fill_kv_cache=True)
        self.kv_layers = sorted(cache)
        return (pad, *[cache[i][name] for i in self.kv_layers for name in ("key_states", "value_states")])


class SmolVLAStep(nn.Module):
    """One flow-matching step: (noisy actions, time, the prefix's mask and cache) -> velocity (SmolVLA's
    denoise_step)."""

    def __init__(self, policy: PreTrainedPolicy, kv_layers: list[int]) -> None:
        super().__init__()
        self.model = policy.model
        self.kv_layers = list(kv_layers)

    def forward(self, x_t: torch.Tensor, time: torch.Tensor, pad: torch.Tensor, *kv: torch.Tensor) -> torch.Tensor:
        cache = {layer: {"key_states": kv[2 * j], "value_states": kv[2 * j + 1]}
                 for j, layer in enumerate(self.kv_layers)}
        velocity: torch.Tensor = self.model.denoise_step(pad, cache, x_t, time)
        return velocity


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kuavo_export", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="<run>/checkpoints/last (or a pretrained_model folder)")
    parser.add_argument("--output", default=None, help="export folder (default: <pretrained_model>/onnx)")
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.output)
    except OutputError as exc:
        print(f"kuavo_export: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"kuavo_export: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except WRITE_FAILURES as exc:
        if not is_write_failure(exc):
            raise
        print(f"kuavo_export: error: cannot write the export: {reason(exc)}; free space or pass another --output",
              file=sys.stderr)
        return 1
    manifest = json.loads((out / ONNX_MANIFEST).read_text())
    print(f"wrote {out} ({', '.join(manifest['graphs'].values())}); max |onnx - torch| "
          f"{manifest['max_abs_error']} within atol {ATOL} + rtol {RTOL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
