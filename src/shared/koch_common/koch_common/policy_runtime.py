"""The one policy runtime that training and the robot's policy node share.

Pre-processing (numpy observation -> the tensors LeRobotDataset yields), normalisation
(LeRobot's processor pipelines holding the dataset stats), the model, and post-processing
(unnormalisation back to robot units) live here exactly once, so what was trained is what runs.

torch and lerobot are imported inside the functions: the driver imports koch_common and must
not pay seconds of start-up for them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from koch_common.config import ConfigError

if TYPE_CHECKING:
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.pretrained import PreTrainedPolicy
    from lerobot.processor import PolicyProcessorPipeline

ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
# LeRobot's checkpoint layout: <output_dir>/checkpoints/<step>/pretrained_model/{config.json,
# model.safetensors, policy_preprocessor.json, policy_postprocessor.json, *.safetensors}.
PRETRAINED_MODEL_DIR = "pretrained_model"
# Our addition to that layout: the dataset's feature specs (dtype, shape, joint names) for the
# policy's inputs and action, so the robot knows which joint each action column drives.
FEATURE_SPECS_FILE = "koch_features.json"
_REQUIRED_CHECKPOINT_FILES = ("config.json", "model.safetensors", "policy_preprocessor.json",
                              "policy_postprocessor.json", FEATURE_SPECS_FILE)


class PolicyInputError(ValueError):
    """An observation handed to the policy does not match what it was trained on."""


def make_policy_config(policy_type: str, overrides: Mapping[str, Any], device: str) -> PreTrainedConfig:
    """LeRobot's config class for `policy_type` built from `overrides`, with unknown keys named."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import make_policy_config as lerobot_make_policy_config

    known_types = sorted(PreTrainedConfig.get_known_choices())
    if policy_type not in known_types:
        raise ConfigError(f"policy.type {policy_type!r} is not a LeRobot policy; known types: {known_types}")
    config_cls = PreTrainedConfig.get_choice_class(policy_type)
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(
            f"policy.overrides: unknown key(s) {unknown} for {config_cls.__name__}; "
            f"valid keys are {sorted(valid)}"
        )
    kwargs = dict(overrides)
    # The robot and CI machines are offline: torchvision would try to download ImageNet weights.
    if "pretrained_backbone_weights" in valid:
        kwargs.setdefault("pretrained_backbone_weights", None)
        if kwargs["pretrained_backbone_weights"] is not None:
            raise ConfigError(
                "policy.overrides.pretrained_backbone_weights must be null: pretrained weights would be "
                "downloaded, and this project trains offline from scratch"
            )
    try:
        return lerobot_make_policy_config(policy_type, device=device, **kwargs)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise ConfigError(f"policy.overrides are invalid for {config_cls.__name__}: {exc}") from exc


def require_features(dataset_features: Mapping[str, Any], wanted: Sequence[str]) -> None:
    """Raise a ConfigError naming each wanted feature the dataset lacks, and listing what it has."""
    missing = [key for key in wanted if key not in dataset_features]
    if missing:
        raise ConfigError(
            f"the dataset lacks feature(s) {missing} that the policy needs; it has "
            f"{sorted(dataset_features)}. Fix policy.input_features in the training config or "
            "re-convert the dataset with those features"
        )


def select_policy_features(
    dataset_features: Mapping[str, Mapping[str, Any]], input_keys: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input_features, output_features) as LeRobot PolicyFeatures, only for `input_keys` + action.

    Raises a ConfigError naming each missing feature and listing the ones the dataset has.
    """
    from lerobot.datasets.utils import dataset_to_policy_features

    wanted = [*input_keys, ACTION_KEY]
    require_features(dataset_features, wanted)
    policy_features = dataset_to_policy_features({key: dict(dataset_features[key]) for key in wanted})
    inputs = {key: policy_features[key] for key in input_keys}
    outputs = {ACTION_KEY: policy_features[ACTION_KEY]}
    return inputs, outputs


# Optional policy plugins registered with LeRobot (`@PreTrainedConfig.register_subclass`): importing
# them makes their types buildable and their checkpoints loadable. kuavo_train ships the RGB+Depth
# diffusion policy; the robot's workspace installs kuavo_train beside koch_common.
POLICY_PLUGIN_MODULES = ("kuavo_train.policies",)


def register_policy_plugins() -> None:
    import importlib

    for module in POLICY_PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise  # the plugin exists but is broken: say so rather than hide it


def image_output_shape(spec: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) the policy sees for an image feature spec after resize and crop."""
    height, width = (spec.get("crop") or spec.get("resize") or list(spec["shape"][:2]))
    return int(height), int(width)


def transform_image(image: torch.Tensor, spec: Mapping[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Resize then crop a float (..., C, H, W) image as configured in `spec` (resize/crop keys).

    Training passes a generator (random crop); inference passes None (centre crop), so the robot
    sees the same framing as the average training sample.
    """
    import torch

    resize, crop = spec.get("resize"), spec.get("crop")
    if resize and tuple(image.shape[-2:]) != tuple(resize):
        lead = image.shape[:-3]
        flat = image.reshape(-1, *image.shape[-3:])
        flat = torch.nn.functional.interpolate(flat, size=tuple(resize), mode="bilinear", antialias=True,
                                               align_corners=False)
        image = flat.reshape(*lead, *flat.shape[-3:])
    if crop:
        height, width = image.shape[-2:]
        ch, cw = crop
        if ch > height or cw > width:
            raise ValueError(f"crop {crop} is larger than the image {(height, width)}; lower dataset.crop")
        if generator is not None:
            top = int(torch.randint(0, height - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - cw + 1, (1,), generator=generator))
        else:
            top, left = (height - ch) // 2, (width - cw) // 2
        image = image[..., top:top + ch, left:left + cw]
    return image


def build_policy(
    policy_type: str,
    overrides: Mapping[str, Any],
    dataset_features: Mapping[str, Mapping[str, Any]],
    dataset_stats: Mapping[str, Mapping[str, Any]],
    input_keys: Sequence[str],
    device: str = "cpu",
    image_transforms: Mapping[str, Mapping[str, Any]] | None = None,
    pretrained_path: str | None = None,
) -> PolicyRuntime:
    """A fresh (untrained) policy with processors normalising by `dataset_stats`.

    Training builds its policy here and saves it with `PolicyRuntime.save`; the robot loads it
    with `PolicyRuntime.load`. Both then run the same processors and model code.
    `image_transforms`: per image key {"resize": [h, w] | None, "crop": [h, w] | None, "kind": "rgb" |
    "depth"}, recorded in the checkpoint so the robot frames its images the same way.
    `pretrained_path`: a LOCAL folder with pretrained weights (SmolVLA / pi0 fine-tuning).
    """
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    register_policy_plugins()
    if policy_type in _HUB_IDS and pretrained_path is None:
        raise ConfigError(
            f"policy.type={policy_type} fine-tunes pretrained weights: set policy.pretrained_path to a local "
            f"folder holding them (e.g. `huggingface-cli download {_HUB_IDS[policy_type]} --local-dir <folder>` "
            "on a machine with network access); training never downloads"
        )
    # LeRobot's configs take a device type ("cuda", "cpu"); the model goes to the exact device (e.g.
    # "cuda:3" of a multi-GPU rank, whose current CUDA device accelerate sets).
    config = make_policy_config(policy_type, overrides, device.split(":")[0])
    config.input_features, config.output_features = select_policy_features(dataset_features, input_keys)
    feature_specs = {key: _json_feature_spec(dataset_features[key]) for key in [*input_keys, ACTION_KEY]}
    for key, transform in (image_transforms or {}).items():
        if key not in config.input_features:
            continue
        feature_specs[key].update({k: (list(v) if isinstance(v, (list, tuple)) else v)
                                   for k, v in transform.items()})
        channels = config.input_features[key].shape[0]
        config.input_features[key].shape = (channels, *image_output_shape(feature_specs[key]))
    try:
        config.validate_features()
    except ValueError as exc:
        raise ConfigError(
            f"policy.input_features {list(input_keys)} do not suit {policy_type}: {exc}"
        ) from exc
    policy_cls = get_policy_class(policy_type)
    if pretrained_path is not None:
        policy = _load_local_pretrained(policy_cls, config, pretrained_path)
    else:
        policy = policy_cls(config)
    policy.to(device)
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=dict(dataset_stats))
    return PolicyRuntime(policy, preprocessor, postprocessor, feature_specs)


# Where the VLA weights come from, for the error message when they are absent locally.
_HUB_IDS = {"smolvla": "lerobot/smolvla_base", "pi0": "lerobot/pi0_base", "pi05": "lerobot/pi05_base"}


def _load_local_pretrained(policy_cls: Any, config: PreTrainedConfig, pretrained_path: str) -> PreTrainedPolicy:
    """Fine-tuning start point from a LOCAL folder only (config.json + model.safetensors)."""
    path = Path(pretrained_path).expanduser()
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        hub_id = _HUB_IDS.get(config.type, f"<hub id of a {config.type} checkpoint>")
        raise ConfigError(
            f"policy.pretrained_path {path} holds no pretrained {config.type} weights (config.json + "
            f"model.safetensors). Download them once on a machine with network access, e.g. "
            f"`huggingface-cli download {hub_id} --local-dir {path}`, and copy the folder here; "
            "training never downloads"
        )
    return policy_cls.from_pretrained(str(path), config=config)


def _json_feature_spec(feature: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "dtype": str(feature["dtype"]),
        "shape": [int(n) for n in feature["shape"]],
        "names": list(feature["names"]) if feature.get("names") is not None else None,
    }


class ObservationChecker:
    """Checks robot observations against what the policy was trained on and batches them (one).

    Images: uint8 (1, H, W, C) as recorded (with `feature_specs`, the checkpoint's dataset specs,
    before the training resize / crop). Everything else: finite float32 (1, *shape).
    This is the input of `arrays_to_batch` and of the exported ONNX graph alike. The expected
    layouts are worked out once, here, not on every inference.
    """

    def __init__(self, input_features: Mapping[str, Any],
                 feature_specs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.input_features = input_features
        self.feature_specs = feature_specs
        self.features = tuple(input_features)
        self._images: list[tuple[str, tuple[int, int, int]]] = []
        self._vectors: list[tuple[str, tuple[int, ...]]] = []
        for key, feature in input_features.items():
            expected = tuple(feature.shape)
            if key.startswith(IMAGE_PREFIX):
                spec = (feature_specs or {}).get(key, {})
                if spec.get("resize") or spec.get("crop"):
                    height, width, channels = spec["shape"]
                else:
                    channels, height, width = expected
                self._images.append((key, (height, width, channels)))
            else:
                self._vectors.append((key, expected))

    def __call__(self, observation: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        try:
            for key, shape in self._images:
                value = np.asarray(observation[key])
                if value.ndim == 2 and shape[2] == 1:
                    value = value[:, :, None]
                if value.dtype != np.uint8 or value.shape != shape:
                    raise PolicyInputError(
                        f"{key}: expected a uint8 image of shape {shape} (HxWxC, as "
                        f"recorded), got {value.dtype} {value.shape}; fix the camera resolution"
                    )
                arrays[key] = np.ascontiguousarray(value)[None]
            for key, shape in self._vectors:
                value = np.asarray(observation[key])
                if value.shape != shape:
                    raise PolicyInputError(f"{key}: expected shape {shape}, got {value.shape}")
                batch = value.astype(np.float32)[None]  # a copy: the caller may reuse its buffer
                if not np.isfinite(batch).all():
                    raise PolicyInputError(f"{key}: contains non-finite values {value}")
                arrays[key] = batch
        except KeyError:
            missing = [key for key in self.features if key not in observation]
            raise PolicyInputError(
                f"observation lacks {missing}; the policy needs {sorted(self.features)}, "
                f"got {sorted(observation)}"
            ) from None
        return arrays

    def batch(self, observation: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Numpy robot observation -> a batch of one, in the layout LeRobotDataset produces.

        State: float32 (D,) -> (1, D). Images: uint8 HxWxC -> float32 (1, C, H, W) in [0, 1].
        With `feature_specs` images arrive at the recorded size and get the training resize / centre crop.
        """
        import torch

        arrays = self(observation)
        return arrays_to_batch({k: torch.from_numpy(v) for k, v in arrays.items()}, self.input_features,
                               self.feature_specs)


def arrays_to_batch(
    arrays: Mapping[str, torch.Tensor],
    input_features: Mapping[str, Any],
    feature_specs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """`ObservationChecker`'s output as tensors -> the batch layout LeRobotDataset produces.

    Images: uint8 (B, H, W, C) -> float32 (B, C, h, w) in [0, 1] (the `/ 255` of the dataset's video
    decoder), then the training resize / centre crop. Pure torch, so the ONNX export traces this very
    function into the deployed graph.
    """
    batch = {}
    for key in input_features:
        tensor = arrays[key]
        if key.startswith(IMAGE_PREFIX):
            tensor = tensor.permute(0, 3, 1, 2).float() / 255.0
            spec = (feature_specs or {}).get(key)
            if spec:
                tensor = transform_image(tensor, spec, None)
        batch[key] = tensor
    return batch


def observation_to_batch(
    observation: Mapping[str, np.ndarray],
    input_features: Mapping[str, Any],
    feature_specs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """`ObservationChecker.batch` for a one-off call (a runtime keeps one: `check_observation`)."""
    return ObservationChecker(input_features, feature_specs).batch(observation)


def with_stacked_cameras(batch: dict[str, Any], config: PreTrainedConfig) -> dict[str, Any]:
    """The batch plus `observation.images`: every camera stacked, the layout LeRobot's diffusion reads."""
    import torch

    return {**batch, "observation.images": torch.stack([batch[k] for k in config.image_features], dim=-4)}


class CheckpointInfo:
    """What every runtime reads from a checkpoint's config.json and feature specs.

    Shared by PolicyRuntime (PyTorch) and OnnxRuntime so both describe a checkpoint the same way;
    subclasses provide `config` (LeRobot's PreTrainedConfig) and `feature_specs`.
    """

    config: PreTrainedConfig
    feature_specs: dict[str, dict[str, Any]]
    # Seconds the model itself took in the last predict_chunk (the forward, or every ONNX session
    # run; the ACT graph's run includes its traced pre/post-processing); the rest of predict_chunk
    # is Python pre/post-processing. Latency figures split on it.
    last_forward_s: float = float("nan")
    # The CPUs the thread calling predict_chunk should run on (OnnxRuntime: the core its pinned pool
    # leaves free, see onnx_runtime.ThreadLayout); None: wherever the OS puts it.
    caller_cpus: frozenset[int] | None = None

    @property
    def input_features(self) -> dict[str, Any]:
        """Feature key -> PolicyFeature (type, shape; images channel-first)."""
        return dict(self.config.input_features)

    @functools.cached_property
    def check_observation(self) -> ObservationChecker:
        """This checkpoint's `ObservationChecker` (its layouts worked out once, not per inference)."""
        return ObservationChecker(self.config.input_features, self.feature_specs)

    @property
    def action_names(self) -> list[str]:
        """Name of each action column (the dataset's joint names), in order."""
        names = self.feature_specs[ACTION_KEY].get("names")
        return list(names) if names else [f"action_{i}" for i in range(self.action_dim)]

    def feature_names(self, key: str) -> list[str] | None:
        """The dataset's names for feature `key` (e.g. joint order of observation.state)."""
        spec = self.feature_specs.get(key)
        return list(spec["names"]) if spec and spec.get("names") is not None else None

    @property
    def action_dim(self) -> int:
        return int(self.config.output_features[ACTION_KEY].shape[0])

    @property
    def chunk_size(self) -> int:
        """Length of the chunk predict_chunk returns (ACT: chunk_size; diffusion: n_action_steps)."""
        return int(getattr(self.config, "chunk_size", None) or self.config.n_action_steps)

    @property
    def n_action_steps(self) -> int:
        return int(self.config.n_action_steps)


class PolicyRuntime(CheckpointInfo):
    """A LeRobot policy with its pre- and post-processor pipelines."""

    def __init__(
        self,
        policy: PreTrainedPolicy,
        preprocessor: PolicyProcessorPipeline,
        postprocessor: PolicyProcessorPipeline,
        feature_specs: Mapping[str, Mapping[str, Any]],
    ) -> None:
        self.policy = policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        # Dataset feature specs ({dtype, shape, names}) of the inputs and the action.
        self.feature_specs = {key: dict(spec) for key, spec in feature_specs.items()}

    @classmethod
    def load(cls, checkpoint_dir: Path | str, device: str = "cpu") -> PolicyRuntime:
        """Load a checkpoint saved by `save` (LeRobot's `pretrained_model` layout).

        `checkpoint_dir` may be the `pretrained_model` folder itself or a step folder / `last`
        link that contains one. Only JSON and safetensors are read, never pickles.
        """
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        path = resolve_pretrained_dir(checkpoint_dir)
        register_policy_plugins()
        config = PreTrainedConfig.from_pretrained(path)
        config.device = device
        # strict: every weight must match the architecture in config.json, none silently left random.
        policy = get_policy_class(config.type).from_pretrained(path, config=config, strict=True)
        preprocessor, postprocessor = make_pre_post_processors(
            config,
            pretrained_path=str(path),
            # The device the checkpoint was trained on need not be the one it runs on.
            preprocessor_overrides={"device_processor": {"device": device}},
        )
        feature_specs = json.loads((path / FEATURE_SPECS_FILE).read_text(encoding="utf-8"))
        runtime = cls(policy, preprocessor, postprocessor, feature_specs)
        runtime.reset()
        return runtime

    def save(self, directory: Path | str) -> None:
        """Write the policy (config.json + model.safetensors) and both processors into `directory`."""
        directory = Path(directory)
        self.policy.save_pretrained(directory)
        self.preprocessor.save_pretrained(directory)
        self.postprocessor.save_pretrained(directory)
        specs_json = json.dumps(self.feature_specs, indent=2)
        (directory / FEATURE_SPECS_FILE).write_text(specs_json, encoding="utf-8")

    @property
    def config(self) -> PreTrainedConfig:
        return self.policy.config

    def reset(self) -> None:
        """Forget per-episode state (action queue, temporal ensembler, stateful processors).

        Call at the start of every episode. For ACT `predict_chunk` is stateless; policies that
        condition on an observation history (diffusion, n_obs_steps) keep it here.
        """
        self.policy.reset()
        self.preprocessor.reset()
        self.postprocessor.reset()

    def predict_chunk(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """Actions (chunk_size, action_dim) float32 in robot units for one observation."""
        import torch

        batch = self.check_observation.batch(observation)
        with torch.inference_mode():
            # The processors' batch carries an empty 'action' entry; a queue-based policy would read it.
            batch = {k: v for k, v in self.preprocessor(batch).items() if k != ACTION_KEY}
            batch = self._observe(batch)
            started = time.perf_counter()
            actions = self.policy.predict_action_chunk(batch)
            self.last_forward_s = time.perf_counter() - started
            actions = self.postprocessor(actions)
        return actions[0].detach().cpu().numpy().astype(np.float32)

    def _observe(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Push the observation into the policy's history, as its select_action would (diffusion).

        Returns the batch in the layout the policy's predict_action_chunk reads.
        """

        observe = getattr(self.policy, "observe", None)
        if observe is not None:
            observe(batch)
            return batch
        queues = getattr(self.policy, "_queues", None)
        if queues is None:
            return batch
        from lerobot.policies.utils import populate_queues

        if "observation.images" in queues:  # LeRobot diffusion keeps all cameras stacked in one queue
            batch = with_stacked_cameras(batch, self.config)
        self.policy._queues = populate_queues(queues, batch)
        return batch


def resolve_pretrained_dir(checkpoint_dir: Path | str) -> Path:
    """The folder holding config.json etc.: `checkpoint_dir` or its `pretrained_model` child."""
    path = Path(checkpoint_dir).expanduser()
    if not (path / "config.json").is_file() and (path / PRETRAINED_MODEL_DIR).is_dir():
        path = path / PRETRAINED_MODEL_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist; pass <run>/checkpoints/last")
    missing = [name for name in _REQUIRED_CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a complete policy checkpoint: missing {missing}. Pass a "
            f"<output_dir>/checkpoints/<step> (or .../last) folder written by the `train` command"
        )
    return path.resolve()


def load_runtime(path: Path | str, device: str = "cpu", threads: int = 0) -> Any:
    """The runtime for `path`: OnnxRuntime when it holds an ONNX export (`onnx/manifest.json`, written by
    `kuavo_export`), else the PyTorch PolicyRuntime. Both offer predict_chunk / reset / n_action_steps.

    `path` may be a pretrained_model folder, a step folder / `last` link, or an export folder.
    `threads` > 0 caps the CPU threads inference uses (onnxruntime's session, or torch's process-wide
    intra-op pool); 0 keeps the library's default.
    """
    from koch_common.onnx_runtime import ONNX_MANIFEST, OnnxRuntime, find_onnx_dir

    onnx_dir = find_onnx_dir(Path(path).expanduser())
    if onnx_dir is not None and (onnx_dir / ONNX_MANIFEST).is_file():
        return OnnxRuntime.load(onnx_dir, device, threads)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    return PolicyRuntime.load(path, device)
