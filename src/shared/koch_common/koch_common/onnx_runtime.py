"""onnxruntime-backed policy runtime: same interface and same pre/post-processors as PolicyRuntime.

`kuavo_export` (kuavo_train.export) writes `<pretrained_model>/onnx/` beside a checkpoint:
- ACT: `policy.onnx`, one graph from the checked observation arrays (`ObservationChecker`) to the
  action chunk in robot units. PolicyRuntime's pre-processing, the checkpoint's LeRobot normaliser,
  the model and the unnormaliser are traced into it from the same code, so a tick pays no Python
  processor pipeline (about 1-2 ms on a small CPU, more than the rest of the node).
- diffusion types: `encoder.onnx` (normalised observation history -> conditioning) and `denoiser.onnx`
  (one denoising step); the scheduler loop (diffusers' DDPM/DDIM, as in training) and the checkpoint's
  own LeRobot processor pipelines run here in host code, exactly as PolicyRuntime runs them.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koch_common.policy_runtime import CheckpointInfo

ONNX_DIR = "onnx"
ONNX_MANIFEST = "manifest.json"
# Version of the export layout; 2: the ACT graph takes raw observation arrays and returns robot units.
ONNX_FORMAT = 2
# Every graph's leading axis is exported as this free dimension (other consumers may batch).
BATCH_AXIS = "batch"


def find_onnx_dir(path: Path) -> Path | None:
    """The export folder for `path`: itself, <path>/onnx, or <path>/pretrained_model/onnx."""
    for candidate in (path, path / ONNX_DIR, path / "pretrained_model" / ONNX_DIR):
        if (candidate / ONNX_MANIFEST).is_file():
            return candidate
    return None


def providers_for(device: str) -> list[str]:
    """GPU execution providers (TensorRT, CUDA) when asked for and present, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device.startswith("cuda") else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def physical_cores() -> list[list[int]]:
    """The CPUs this process may run on, one list per physical core (a core's hyperthreads together);
    empty where the OS has no CPU affinity API."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    cores: dict[str, list[int]] = {}
    for cpu in sorted(os.sched_getaffinity(0)):
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        core = siblings.read_text(encoding="utf-8").strip() if siblings.is_file() else str(cpu)
        cores.setdefault(core, []).append(cpu)
    return list(cores.values())


@dataclass(frozen=True)
class ThreadLayout:
    """Where an onnxruntime session's intra-op threads run: the calling thread on the first physical
    core, one pool thread on each core after it (onnxruntime's own layout for the count it picks).

    onnxruntime pins its pool only for the count it picks itself (intra_op_num_threads=0) and never
    pins the calling thread. Both matter on a small computer, measured on the 2-core development host
    with the benchmark's ACT:
    - with an explicit count the pool floats, and the forward after 20-300 ms idle (as between a
      node's inferences) took 15.4-17.0 ms at p50 against 9.3-9.7 ms pinned;
    - with the calling thread (the node's inference worker) floating, the scheduler now and then
      puts it on the pool thread's core (both then wait 6-10 ms on the run queue) and the forward
      runs at one core's speed: in 14 alternating pairs of 600-1,500 inferences in the benchmark's
      node path, p99 lower pinned in 13, median 12.3 ms pinned against 17.3 ms floating (p50 ~9 ms).
    """

    threads: int  # intra_op_num_threads; 0 leaves the count (and the pool's pinning) to onnxruntime
    pool_affinities: str | None = None  # session.intra_op_thread_affinities
    caller_cpus: frozenset[int] | None = None  # for the thread that calls run(); None: leave it floating

    @classmethod
    def for_threads(cls, threads: int) -> ThreadLayout:
        """`threads` 0: one per physical core, as onnxruntime's default. Unpinned for fewer than 2
        threads, fewer cores than threads, or no CPU affinity API."""
        cores = physical_cores()
        count = threads or len(cores)
        if count < 2 or len(cores) < count:
            return cls(threads)
        # One entry per pool thread (count - 1 of them); onnxruntime numbers processors from 1.
        pool = ";".join(",".join(str(cpu + 1) for cpu in cpus) for cpus in cores[1:count])
        return cls(count, pool, frozenset(cores[0]))


class OnnxRuntime(CheckpointInfo):
    """predict_chunk / reset / n_action_steps / chunk_size like PolicyRuntime, on onnxruntime."""

    def __init__(self, onnx_dir: Path, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import make_pre_post_processors

        from koch_common.policy_runtime import FEATURE_SPECS_FILE, register_policy_plugins

        self.onnx_dir = onnx_dir
        self.manifest = json.loads((onnx_dir / ONNX_MANIFEST).read_text(encoding="utf-8"))
        pretrained = (onnx_dir / self.manifest["pretrained_model"]).resolve()
        register_policy_plugins()
        self.config = PreTrainedConfig.from_pretrained(pretrained)
        self.config.device = "cpu"  # processors feed numpy to onnxruntime
        if self.manifest.get("format") != ONNX_FORMAT:
            raise ValueError(
                f"{onnx_dir} was written by an older kuavo_export (format {self.manifest.get('format', 1)}, "
                f"this runtime reads {ONNX_FORMAT}); export again: kuavo_export --checkpoint {pretrained}"
            )
        self.preprocessor, self.postprocessor = make_pre_post_processors(
            self.config, pretrained_path=str(pretrained),
            preprocessor_overrides={"device_processor": {"device": "cpu"}},
        )
        self.feature_specs = json.loads((pretrained / FEATURE_SPECS_FILE).read_text(encoding="utf-8"))
        self.providers = providers_for(device)
        options = ort.SessionOptions()
        # 0 = one thread per physical core (onnxruntime's default); a robot computer may keep a core free
        # for the control loop by asking for fewer. The pool is pinned, and whoever calls predict_chunk
        # should run on `caller_cpus` (the policy runner's worker does).
        layout = ThreadLayout.for_threads(threads)
        options.intra_op_num_threads = layout.threads
        if layout.pool_affinities is not None:
            options.add_session_config_entry("session.intra_op_thread_affinities", layout.pool_affinities)
        self.caller_cpus = layout.caller_cpus
        # No busy-waiting between runs: onnxruntime's pool spins by default, which on a small robot
        # computer takes the core the 30 Hz loop and the DDS threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # This runtime infers one observation at a time. With the batch fixed, onnxruntime folds the
        # traced shape arithmetic into constants and fuses the transformer: the benchmark's ACT graph
        # drops from 238 to 116 nodes and its forward is ~4% faster.
        options.add_free_dimension_override_by_name(BATCH_AXIS, 1)
        self.session_options = options
        self.sessions = {name: ort.InferenceSession(str(onnx_dir / file), options, providers=self.providers)
                         for name, file in self.manifest["graphs"].items()}
        self.input_keys: list[str] = list(self.manifest["inputs"])
        self.kind: str = self.manifest["kind"]
        self._history: dict[str, deque[np.ndarray]] = {}
        if self.kind == "diffusion":
            from lerobot.policies.diffusion.modeling_diffusion import _make_noise_scheduler

            c = self.config
            self.scheduler = _make_noise_scheduler(
                c.noise_scheduler_type, num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start,
                beta_end=c.beta_end, beta_schedule=c.beta_schedule, clip_sample=c.clip_sample,
                clip_sample_range=c.clip_sample_range, prediction_type=c.prediction_type,
            )
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
        import torch

        batch = self.check_observation.batch(observation)
        with torch.inference_mode():
            processed = self.preprocessor(batch)
        return {k: processed[k].numpy().astype(np.float32) for k in self.input_keys}

    def predict_chunk(self, observation: Mapping[str, np.ndarray], noise: np.ndarray | None = None) -> np.ndarray:
        """Actions (chunk, action_dim) float32 in robot units, like PolicyRuntime.predict_chunk."""
        if self.kind == "act":  # one graph: pre-processing and normalisation are inside it
            arrays = self.check_observation(observation)
            started = time.perf_counter()
            actions = self.sessions["policy"].run(None, arrays)[0]
            self.last_forward_s = time.perf_counter() - started
            return actions[0]
        import torch

        inputs = self.normalized_inputs(observation)
        actions = self._diffusion(inputs, noise)  # sets last_forward_s (its session runs only)
        with torch.inference_mode():
            out = self.postprocessor(torch.from_numpy(actions))
        return out[0].numpy().astype(np.float32)

    def _diffusion(self, inputs: dict[str, np.ndarray], noise: np.ndarray | None) -> np.ndarray:
        import torch

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
        action_dim = self.config.output_features["action"].shape[0]
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
        return sample[:, start:start + self.n_action_steps].numpy()
