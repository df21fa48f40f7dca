"""onnxruntime-backed policy runtime: same interface and same pre/post-processors as PolicyRuntime.

`kuavo_export` (kuavo_train.export) writes `<pretrained_model>/onnx/` beside a checkpoint:
- ACT: `policy.onnx`, one graph from the checked observation arrays (`ObservationChecker`) to the
  action chunk in robot units. PolicyRuntime's pre-processing, the checkpoint's LeRobot normaliser,
  the model and the unnormaliser are traced into it from the same code, so a tick runs no Python
  processor pipeline (which on a small CPU costs more than the rest of the node).
- diffusion types: `encoder.onnx` (normalised observation history -> conditioning) and `denoiser.onnx`
  (one denoising step); the scheduler loop (diffusers' DDPM/DDIM, as in training) and the checkpoint's
  own LeRobot processor pipelines run here in host code, exactly as PolicyRuntime runs them.
- flow_matching (SmolVLA): `prefix.onnx` (normalised images and state, the instruction's tokens -> the
  prefix's key/value cache) and `denoise.onnx` (one flow-matching step); the Euler integration over
  `flow_steps` steps, the tokenizer and the processors run here. No Real-Time Chunking guidance: it
  differentiates through the step (PolicyRuntime does it).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from koch_common.checkpoint_layout import ONNX_DIR, ONNX_MANIFEST  # noqa: F401 (re-exported)
from koch_runtime import lerobot_compat
from koch_runtime.checkpoint import PRETRAINED_MODEL_DIR, CheckpointInfo, resolve_pretrained_dir
from koch_runtime.checkpoint_trust import CheckpointError, check_checkpoint_files, load_processors, read_json_object
from koch_runtime.observation import ACTION_KEY
from koch_runtime.threads import ThreadLayout

# Version of the export layout; 2: the ACT graph takes raw observation arrays and returns robot units.
ONNX_FORMAT = 2
# The graphs of each kind of export.
EXPORT_GRAPHS = {"act": ("policy",), "diffusion": ("encoder", "denoiser"), "flow_matching": ("prefix", "denoise")}
# Every graph's leading axis is exported as this free dimension (other consumers may batch).
BATCH_AXIS = "batch"
# Flow matching: the prefix graph's outputs (its padding mask, then each layer's key and value) are the step
# graph's inputs.
PREFIX_PAD, KV_PREFIX = "prefix_pad", "kv"
TOKENS_KEY, TOKEN_MASK_KEY = "observation.language.tokens", "observation.language.attention_mask"


def pad_tokens(processed: dict[str, Any], length: int) -> dict[str, Any]:
    """The instruction's tokens and mask padded (masked out) to `length`: SmolVLA lays out its prefix
    with a Python list per token count, so its graph is traced for one count; padding changes nothing
    the model computes (padded positions are masked from attention and take no position)."""
    tokens, mask = processed[TOKENS_KEY], processed[TOKEN_MASK_KEY]
    missing = length - tokens.shape[1]
    if missing > 0:
        tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], missing)], dim=1)
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], missing)], dim=1)
    return {**processed, TOKENS_KEY: tokens, TOKEN_MASK_KEY: mask}


def find_onnx_dir(path: Path) -> Path | None:
    """The export folder for `path`: itself, <path>/onnx, or <path>/pretrained_model/onnx."""
    for candidate in (path, path / ONNX_DIR, path / PRETRAINED_MODEL_DIR / ONNX_DIR):
        if (candidate / ONNX_MANIFEST).is_file():
            return candidate
    return None


def read_manifest(onnx_dir: Path) -> dict[str, Any]:
    """The export's manifest, checked to name only graph files inside `onnx_dir` and a known kind."""
    path = onnx_dir / ONNX_MANIFEST
    fix = "export again: kuavo_export --checkpoint <the checkpoint>"
    manifest = read_json_object(path, fix)
    if manifest.get("format") != ONNX_FORMAT:
        return manifest  # an older export: OnnxRuntime says how to redo it
    graphs = manifest.get("graphs")
    expected = EXPORT_GRAPHS.get(str(manifest.get("kind")))
    if expected is None or not isinstance(graphs, dict) or set(graphs) != set(expected):
        raise CheckpointError(f"{path}: kind {manifest.get('kind')!r} with graphs {graphs!r} is not an export this "
                              f"runtime runs (kinds: {EXPORT_GRAPHS}); {fix}")
    for name, file in graphs.items():
        if not isinstance(file, str) or Path(file).name != file or not file.endswith(".onnx") \
                or not (onnx_dir / file).is_file():
            raise CheckpointError(f"{path}: graph {name!r} is {file!r}, not a .onnx file in {onnx_dir}; {fix}")
    if not isinstance(manifest.get("inputs"), list) or not isinstance(manifest.get("pretrained_model"), str):
        raise CheckpointError(f"{path} lacks its 'inputs' list or 'pretrained_model' folder; {fix}")
    return manifest


def providers_for(device: str) -> list[str]:
    """GPU execution providers (TensorRT, CUDA) when asked for and present, else CPU."""
    available = ort.get_available_providers()
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device.startswith("cuda") else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def session_options(layout: ThreadLayout) -> ort.SessionOptions:
    """Options for a robot-side session: threads placed by `layout`, no spinning, batch of one."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = layout.threads
    if layout.pool_affinities is not None:
        options.add_session_config_entry("session.intra_op_thread_affinities", layout.pool_affinities)
    # No busy-waiting between runs: onnxruntime's pool spins by default, which on a small robot
    # computer takes the core the 30 Hz loop and the DDS threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # This runtime infers one observation at a time. With the batch fixed, onnxruntime folds the
    # traced shape arithmetic into constants and fuses the transformer: a smaller, faster graph.
    options.add_free_dimension_override_by_name(BATCH_AXIS, 1)
    return options


class OnnxRuntime(CheckpointInfo):
    """predict_chunk / reset / n_action_steps / chunk_size like PolicyRuntime, on onnxruntime."""

    def __init__(self, onnx_dir: Path, device: str = "cpu", threads: int = 0) -> None:
        self.onnx_dir = onnx_dir
        self.manifest = read_manifest(onnx_dir)
        pretrained = (onnx_dir / str(self.manifest.get("pretrained_model", ".."))).resolve()
        if self.manifest.get("format") != ONNX_FORMAT:
            raise ValueError(
                f"{onnx_dir} was written by an older kuavo_export (format {self.manifest.get('format', 1)}, "
                f"this runtime reads {ONNX_FORMAT}); export again: kuavo_export --checkpoint {pretrained}"
            )
        # The checkpoint the graphs were exported from: its processors run here, so it is checked like any.
        self.config, self.feature_specs = check_checkpoint_files(resolve_pretrained_dir(pretrained))
        self.config.device = "cpu"  # processors feed numpy to onnxruntime
        self.preprocessor, self.postprocessor = load_processors(pretrained, self.config, "cpu")
        self.providers = providers_for(device)
        # 0 = one thread per physical core (onnxruntime's default); a robot computer may keep a core free
        # for the control loop by asking for fewer. The pool is pinned, and whoever calls predict_chunk
        # should run on `caller_cpus` (the policy runner's worker does).
        layout = ThreadLayout.for_threads(threads)
        self.caller_cpus = layout.caller_cpus
        self.session_options = session_options(layout)
        self.sessions = {name: ort.InferenceSession(str(onnx_dir / file), self.session_options,
                                                    providers=self.providers)
                         for name, file in self.manifest["graphs"].items()}
        self.input_keys: list[str] = list(self.manifest["inputs"])
        self.kind: str = self.manifest["kind"]
        self._history: dict[str, deque[np.ndarray]] = {}
        if self.kind == "diffusion":
            self.scheduler = lerobot_compat.make_noise_scheduler(self.config)
        if self.kind == "flow_matching":
            self.prefix_inputs = [i.name for i in self.sessions["prefix"].get_inputs()]
            self.prefix_outputs = [o.name for o in self.sessions["prefix"].get_outputs()]
        self.reset()

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu", threads: int = 0) -> OnnxRuntime:
        onnx_dir = find_onnx_dir(Path(path).expanduser())
        if onnx_dir is None:
            raise FileNotFoundError(f"{path} holds no ONNX export ({ONNX_DIR}/{ONNX_MANIFEST}); run kuavo_export")
        return cls(onnx_dir, device, threads)

    def reset(self) -> None:
        self._history = {}
        self.preprocessor.reset()
        self.postprocessor.reset()

    def normalized_inputs(self, observation: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The preprocessed (normalised) observation, batch of one, as float32 numpy."""
        batch = self.with_task(self.check_observation.batch(observation))
        with torch.inference_mode():
            processed = self.preprocessor(batch)
        if self.kind == "flow_matching":  # the tokenizer's output too, as the graph takes it
            processed = pad_tokens(processed, int(self.config.tokenizer_max_length))
            return {k: processed[k].numpy() for k in self.prefix_inputs}
        return {k: processed[k].numpy().astype(np.float32) for k in self.input_keys}

    def predict_chunk(self, observation: Mapping[str, np.ndarray], noise: np.ndarray | None = None) -> np.ndarray:
        """Actions (chunk, action_dim) float32 in robot units, like PolicyRuntime.predict_chunk."""
        if self.kind == "act":  # one graph: pre-processing and normalisation are inside it
            arrays = self.check_observation(observation)
            started = time.perf_counter()
            actions: np.ndarray = self.sessions["policy"].run(None, arrays)[0]
            self.last_forward_s = time.perf_counter() - started
            return actions[0]
        inputs = self.normalized_inputs(observation)
        # Both set last_forward_s (their session runs only).
        normalized = self._flow(inputs, noise) if self.kind == "flow_matching" else self._diffusion(inputs, noise)
        with torch.inference_mode():
            out = self.postprocessor(torch.from_numpy(normalized))
        chunk: np.ndarray = out[0].numpy().astype(np.float32)
        return chunk

    def _flow(self, inputs: dict[str, np.ndarray], noise: np.ndarray | None) -> np.ndarray:
        """SmolVLA's sample_actions: the prefix cache once, then Euler steps from noise (t = 1) to actions
        (t = 0) along the step graph's velocity; the padded action columns dropped."""
        started = time.perf_counter()
        prefix = dict(zip(self.prefix_outputs, self.sessions["prefix"].run(None, inputs), strict=True))
        shape = (1, self.chunk_size, int(self.config.max_action_dim))
        # As SmolVLA draws it (torch's generator), so a seed gives PolicyRuntime's noise.
        x_t = torch.normal(0.0, 1.0, size=shape, dtype=torch.float32).numpy() if noise is None else noise
        steps = int(self.flow_steps or 1)
        dt = -1.0 / steps
        for step in range(steps):
            time_now = np.full((1,), 1.0 + step * dt, dtype=np.float32)
            velocity = self.sessions["denoise"].run(None, {"x_t": x_t, "time": time_now, **prefix})[0]
            x_t = x_t + dt * velocity
        self.last_forward_s = time.perf_counter() - started
        window: np.ndarray = x_t[:, :, :self.action_dim]
        return window

    def _diffusion(self, inputs: dict[str, np.ndarray], noise: np.ndarray | None) -> np.ndarray:
        steps = int(self.config.n_obs_steps)
        for key, value in inputs.items():
            queue = self._history.setdefault(key, deque(maxlen=steps))
            while len(queue) < steps - 1:  # the first observation fills the history, as LeRobot does
                queue.append(value)
            queue.append(value)
        history = {k: np.stack(list(q), axis=1) for k, q in self._history.items()}
        started = time.perf_counter()
        cond = self.sessions["encoder"].run(None, history)[0]
        forward_s = time.perf_counter() - started
        action_dim = self.config.output_features[ACTION_KEY].shape[0]
        sample = torch.randn(1, self.config.horizon, action_dim) if noise is None else torch.from_numpy(noise)
        self.scheduler.set_timesteps(self.config.num_inference_steps or self.config.num_train_timesteps)
        for t in self.scheduler.timesteps:
            feed = {"sample": sample.numpy().astype(np.float32), "timestep": np.full((1,), int(t), dtype=np.int64),
                    "global_cond": cond}
            started = time.perf_counter()
            output = self.sessions["denoiser"].run(None, feed)[0]
            forward_s += time.perf_counter() - started
            sample = self.scheduler.step(torch.from_numpy(output), t, sample).prev_sample
        self.last_forward_s = forward_s
        start = steps - 1
        window: np.ndarray = sample[:, start:start + self.n_action_steps].numpy()
        return window
