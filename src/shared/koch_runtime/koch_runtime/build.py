"""A fresh policy for training: LeRobot's config and model for a policy type, sized from the dataset.

The config overrides, input features and image transforms come from the training config and are
checked here with errors that name the key to fix; the result is a PolicyRuntime whose processors
normalise with the dataset's stats and whose feature specs record what the robot must send.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lerobot.configs.policies import PreTrainedConfig
from lerobot.datasets.utils import dataset_to_policy_features
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
from lerobot.policies.factory import make_policy_config as lerobot_make_policy_config
from lerobot.policies.pretrained import PreTrainedPolicy

from koch_common.config import ConfigError
from koch_common.image_codec import DEPTH_UNIT_M
from koch_runtime.lerobot_compat import is_depth_map, pi0_tokenizer_from, run_pi0_on_stock_transformers
from koch_runtime.observation import ACTION_KEY, DEPTH_KIND, image_output_shape
from koch_runtime.plugins import register_policy_plugins
from koch_runtime.torch_runtime import PolicyRuntime
from koch_runtime.vlm_backbone import PI0, SMOLVLA, is_backbone_folder, is_tokenizer_folder

COLOUR_CHANNELS = 3
# Where the VLA weights come from, for the error message when they are absent locally.
HUB_IDS = {"smolvla": "lerobot/smolvla_base", "pi0": "lerobot/pi0_base", "pi05": "lerobot/pi05_base"}


def make_policy_config(policy_type: str, overrides: Mapping[str, Any], device: str) -> PreTrainedConfig:
    """LeRobot's config class for `policy_type` built from `overrides`, with unknown keys named."""
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
    wanted = [*input_keys, ACTION_KEY]
    require_features(dataset_features, wanted)
    policy_features = dataset_to_policy_features({key: dict(dataset_features[key]) for key in wanted})
    inputs = {key: policy_features[key] for key in input_keys}
    outputs = {ACTION_KEY: policy_features[ACTION_KEY]}
    return inputs, outputs


def build_policy(
    policy_type: str,
    overrides: Mapping[str, Any],
    dataset_features: Mapping[str, Mapping[str, Any]],
    dataset_stats: Mapping[str, Mapping[str, Any]],
    input_keys: Sequence[str],
    device: str = "cpu",
    image_transforms: Mapping[str, Mapping[str, Any]] | None = None,
    pretrained_path: str | None = None,
    tokenizer_dir: str | None = None,
) -> PolicyRuntime:
    """A fresh (untrained) policy with processors normalising by `dataset_stats`.

    Training builds its policy here and saves it with `PolicyRuntime.save`; the robot loads it
    with `PolicyRuntime.load`. Both then run the same processors and model code.
    `image_transforms`: per image key {"resize": [h, w] | None, "crop": [h, w] | None, "kind": "rgb" |
    "depth"}, recorded in the checkpoint so the robot frames its images the same way.
    `pretrained_path`: a LOCAL folder with pretrained weights (SmolVLA / pi0 fine-tuning).
    `tokenizer_dir`: pi0's tokenizer, a LOCAL folder (koch_runtime.vlm_backbone.build_tokenizer).
    """
    register_policy_plugins()
    run_pi0_on_stock_transformers()
    from_scratch = from_local_backbone(overrides) or (
        policy_type == PI0 and tokenizer_dir is not None and is_tokenizer_folder(Path(tokenizer_dir)))
    if policy_type in HUB_IDS and pretrained_path is None and not from_scratch:
        raise ConfigError(
            f"policy.type={policy_type} needs its backbone locally: set policy.pretrained_path to a local folder "
            f"holding pretrained weights (e.g. `huggingface-cli download {HUB_IDS[policy_type]} --local-dir "
            "<folder>` on a machine with network access)"
            + (", or leave it unset to train from scratch on a backbone `train` builds (policy.vlm_backbone)"
               if policy_type == SMOLVLA else "")
            + (", or leave it unset to train from scratch on a tokenizer `train` builds"
               if policy_type == PI0 else "")
            + "; training never downloads"
        )
    # LeRobot's configs take a device type ("cuda", "cpu"); the model goes to the exact device (e.g.
    # "cuda:3" of a multi-GPU rank, whose current CUDA device accelerate sets).
    config = make_policy_config(policy_type, overrides, device.split(":")[0])
    config.input_features, config.output_features = select_policy_features(dataset_features, input_keys)
    feature_specs = {key: json_feature_spec(dataset_features[key]) for key in [*input_keys, ACTION_KEY]}
    depth_keys = [key for key in input_keys if is_depth_map(dataset_features[key])]
    for key in depth_keys:
        feature_specs[key]["kind"] = DEPTH_KIND
        if not getattr(config, "takes_depth_maps", False):
            # A policy built for colour images (LeRobot's ACT, diffusion): depth as a grey three-channel image.
            feature_specs[key]["channels"] = COLOUR_CHANNELS
            config.input_features[key].shape = (COLOUR_CHANNELS, *config.input_features[key].shape[1:])
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
        policy = load_local_pretrained(policy_cls, config, pretrained_path)
    else:
        policy = policy_cls(config)
    policy.to(device)
    stats = depth_stats_in_metres(dataset_stats, depth_keys)
    if getattr(config, "takes_depth_maps", False):
        # Depth enters such a policy's depth encoder in metres, unnormalised: a distance means the same to
        # the model whatever dataset it was trained on. Without statistics LeRobot's normaliser passes a
        # feature through. (Here, not in the plugin's processor factory: LeRobot 0.4.4 builds the
        # processors of any DiffusionConfig subclass with diffusion's own factory.)
        stats = {k: v for k, v in stats.items() if k not in depth_keys}
    with pi0_tokenizer_from(tokenizer_dir) if policy_type == PI0 and tokenizer_dir else contextlib.nullcontext():
        preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=stats)
    return PolicyRuntime(policy, preprocessor, postprocessor, feature_specs)


def from_local_backbone(overrides: Mapping[str, Any]) -> bool:
    """Whether `overrides` build SmolVLA from scratch on a local backbone folder (koch_runtime.vlm_backbone)."""
    folder = overrides.get("vlm_model_name")
    return folder is not None and is_backbone_folder(Path(folder)) and overrides.get("load_vlm_weights") is False


def depth_stats_in_metres(dataset_stats: Mapping[str, Mapping[str, Any]],
                          depth_keys: Sequence[str]) -> dict[str, Any]:
    """The dataset's statistics with depth maps' in metres: the dataset keeps them in its unit (mm), the
    policy sees metres (`depth_for_policy`)."""
    stats = dict(dataset_stats)
    for key in depth_keys:
        if key in stats:
            stats[key] = {name: value if name == "count" else np.asarray(value, dtype=np.float64) * DEPTH_UNIT_M
                          for name, value in stats[key].items()}
    return stats


def load_local_pretrained(policy_cls: Any, config: PreTrainedConfig, pretrained_path: str) -> PreTrainedPolicy:
    """Fine-tuning start point from a LOCAL folder only (config.json + model.safetensors)."""
    path = Path(pretrained_path).expanduser()
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        hub_id = HUB_IDS.get(config.type, f"<hub id of a {config.type} checkpoint>")
        raise ConfigError(
            f"policy.pretrained_path {path} holds no pretrained {config.type} weights (config.json + "
            f"model.safetensors). Download them once on a machine with network access, e.g. "
            f"`huggingface-cli download {hub_id} --local-dir {path}`, and copy the folder here; "
            "training never downloads"
        )
    return policy_cls.from_pretrained(str(path), config=config)


def json_feature_spec(feature: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset feature spec as stored in the checkpoint: dtype, shape and names, JSON types only."""
    return {
        "dtype": str(feature["dtype"]),
        "shape": [int(n) for n in feature["shape"]],
        "names": list(feature["names"]) if feature.get("names") is not None else None,
    }
