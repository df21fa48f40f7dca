"""What a checkpoint folder may name, checked before LeRobot reads it: a checkpoint is data, never code.

A checkpoint is JSON and safetensors, but JSON can still name code. LeRobot's processor loader imports a
step's `"class"` (any dotted path: `"os.system"`) and calls it with the step's `"config"`; a registered
step can load further models with `trust_remote_code=True` (`action_tokenizer_processor`,
`reward_classifier_processor`); a policy type's construction can do the same with a name from
config.json (`sac`, `pi0_fast`, `groot`, ...), or download backbone weights
(`pretrained_backbone_weights`). So before any of a checkpoint is handed to LeRobot, every name in it
is checked against allow-lists, and the files it points to are checked to be whole:

- processor steps (`policy_preprocessor.json`, `policy_postprocessor.json`): only by `registry_name`,
  only names in `SAFE_PROCESSOR_STEPS` (or allowed by a policy plugin, `allow_processor_step`), and each
  `state_file` a `.safetensors` file in the same folder. A `"class"` entry (an import path) is refused
  whatever it names, before anything is imported.
- config.json: `type` must be a loadable policy type (`loadable_policy_types`: LeRobot's act, diffusion,
  smolvla, pi0, pi05, and the types of the installed policy plugins); `vision_backbone` a torchvision
  classification model; `pretrained_backbone_weights` null (the weights are in model.safetensors; a name
  would be downloaded). The feature and normalisation types it holds are enums that LeRobot's own
  parser (draccus) checks; its errors are reported here in one line.
- safetensors files: whole (the header's tensors end exactly at the end of the file), so a truncated
  copy is an error naming the file rather than a deserialisation error naming none.
- `koch_features.json`: a JSON object of feature specs, with the action's and the state's joint names;
  `check_joint_names` compares them with the robot's (koch.yaml), in order.

Every refusal is a `CheckpointError`: one line naming the file, what is wrong and the fix.

Only LeRobot's public API is used here (its processor file format, `ProcessorStepRegistry.list`,
`PreTrainedConfig.from_pretrained`, `make_pre_post_processors`). The allow-lists are judgements about
LeRobot 0.4.4's steps and policy types: on a LeRobot upgrade, check that each allowed step still builds
from its JSON config and safetensors state alone, and each allowed type loads no model or code by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torchvision
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import make_pre_post_processors
from lerobot.processor import ProcessorStepRegistry

from koch_common.config import ConfigError
from koch_runtime.checkpoint import FEATURE_SPECS_FILE
from koch_runtime.observation import ACTION_KEY
from koch_runtime.plugins import policy_plugins, register_policy_plugins

STATE_KEY = "observation.state"
PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")
# LeRobot's processor step registry names whose construction reads nothing but their JSON config and their
# safetensors state (no files or models named by the checkpoint, no code), with the policies using them.
SAFE_PROCESSOR_STEPS: dict[str, str] = {
    "rename_observations_processor": "every policy",
    "to_batch_processor": "every policy",
    "device_processor": "every policy",
    "normalizer_processor": "every policy",
    "unnormalizer_processor": "every policy",
    # Loads a tokenizer by name (AutoTokenizer, without remote code; offline: a local folder only).
    "tokenizer_processor": "smolvla, pi0, pi05",
    "pi05_prepare_state_tokenizer_processor_step": "pi05",
    "smolvla_new_line_processor": "smolvla",  # appends a newline to the task text
    "pi0_new_line_processor": "pi0",  # likewise
}
# LeRobot policy types whose construction from config.json reads no further model or code by name.
# (sac, reward_classifier, pi0_fast, groot, wall_x load models with trust_remote_code=True; the rest are
# not used by this project.) The installed policy plugins' types are added (`loadable_policy_types`).
LOADABLE_LEROBOT_POLICY_TYPES = ("act", "diffusion", "smolvla", "pi0", "pi05")
# Step names a policy plugin declared safe (`allow_processor_step`).
_plugin_steps: set[str] = set()
# A safetensors header longer than this is not one this project writes (LeRobot's own limit is 100 MB).
MAX_SAFETENSORS_HEADER = 100_000_000


class CheckpointError(ConfigError):
    """A checkpoint is refused (it names code, is incomplete or corrupt, or is for another robot).

    The message is one line naming the file, what is wrong and what to do. A ConfigError, so the CLIs
    report it as one line and exit 2, and the policy node as one line and exit 1.
    """


def one_line(exc: BaseException | str, limit: int = 400) -> str:
    """`exc`'s message on one line (LeRobot's and torch's run over several), shortened to `limit` chars."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def allow_processor_step(name: str) -> None:
    """Declare a processor step registered by a policy plugin (`ProcessorStepRegistry.register(name)`)
    as safe to build from a checkpoint: its construction reads only its JSON config and safetensors state.

    Call it where the plugin registers the step (the plugin module is imported before any checkpoint
    is checked, `koch_runtime.plugins`).
    """
    _plugin_steps.add(name)


def allowed_processor_steps() -> list[str]:
    return sorted(set(SAFE_PROCESSOR_STEPS) | _plugin_steps)


def loadable_policy_types() -> list[str]:
    """Policy types a checkpoint may name: LOADABLE_LEROBOT_POLICY_TYPES and the installed plugins'."""

    return sorted({*LOADABLE_LEROBOT_POLICY_TYPES, *(entry.name for entry in policy_plugins())})


def read_json_object(path: Path, fix: str = "copy the checkpoint again or use another one") -> dict[str, Any]:
    """The JSON object in `path`; CheckpointError (naming it) when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read ({one_line(exc)}): it is corrupt or truncated; {fix}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


def check_safetensors_file(path: Path) -> None:
    """Refuse a safetensors file that is not whole: its header must parse and its tensors end at its end.

    safetensors itself reports a truncated file as "MetadataIncompleteBuffer" without naming it.
    """
    fix = ("the copy is incomplete or the disk filled while it was written; copy the checkpoint again or "
           "use another one (e.g. an earlier step)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path} is truncated ({size} bytes, not even a safetensors header); {fix}")
            header_size = int.from_bytes(prefix, "little")
            if header_size > min(size - 8, MAX_SAFETENSORS_HEADER):
                raise CheckpointError(f"{path} is truncated or corrupt (its header claims {header_size} bytes, "
                                      f"the file has {size}); {fix}")
            header = json.loads(file.read(header_size))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt: its safetensors header cannot be read ({one_line(exc)}); "
                              f"{fix}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupt: its safetensors header is not a JSON object; {fix}")
    try:
        data_size = max((int(spec["data_offsets"][1]) for key, spec in header.items() if key != "__metadata__"),
                        default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise CheckpointError(f"{path} is corrupt: a tensor in its header has no data_offsets; {fix}") from None
    expected = 8 + header_size + data_size
    if expected != size:
        raise CheckpointError(f"{path} is truncated or corrupt: its header describes {expected} bytes but the file "
                              f"has {size}; {fix}")


def check_processor_file(pretrained_dir: Path, filename: str) -> None:
    """Refuse a processor pipeline file that names anything but allowed registered steps (see module doc).

    Nothing is imported here: a refused step never reaches LeRobot's loader.
    """

    path = pretrained_dir / filename
    pipeline = read_json_object(path)
    steps = pipeline.get("steps")
    if not isinstance(steps, list):
        raise CheckpointError(f"{path} is not a processor pipeline (no 'steps' list); copy the checkpoint again or "
                              "re-train")
    allowed = allowed_processor_steps()
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise CheckpointError(f"{path}: step {index} is a {type(step).__name__}, not an object; re-train")
        if "class" in step:
            raise CheckpointError(
                f"{path}: step {index} names the import path {step['class']!r} ('class'); a checkpoint may name only "
                f"registered processor steps ('registry_name', one of {allowed}), never code to import, so it is "
                "refused before anything is imported. Do not run this checkpoint; re-train it with `train`"
            )
        name = step.get("registry_name")
        if not isinstance(name, str) or name not in allowed:
            raise CheckpointError(
                f"{path}: step {index} {name!r} is not an allowed processor step (allowed: {allowed}); it may load "
                "code or models, or belong to a plugin that is not installed. Re-train with `train`, or install "
                "the policy plugin that declares it (koch_runtime.checkpoint_trust.allow_processor_step)"
            )
        if name not in ProcessorStepRegistry.list():
            raise CheckpointError(f"{path}: step {index} {name!r} is not registered with LeRobot here; install the "
                                  "package that provides it, or re-train with `train`")
        if not isinstance(step.get("config", {}), dict):
            raise CheckpointError(f"{path}: step {index} {name!r} has a 'config' that is not an object; re-train")
        if "state_file" in step:
            check_state_file(path, index, name, step["state_file"])


def check_state_file(path: Path, index: int, name: str, state_file: Any) -> None:
    """A step's state must be a safetensors file beside `path` (LeRobot would fetch any other from the Hub)."""
    if (not isinstance(state_file, str) or Path(state_file).name != state_file or state_file.startswith(".")
            or not state_file.endswith(".safetensors")):
        raise CheckpointError(f"{path}: step {index} {name!r} has state_file {state_file!r}; it must be the name of a "
                              ".safetensors file in the checkpoint folder. Re-train with `train`")
    check_safetensors_file(path.parent / state_file)


def check_policy_config_file(pretrained_dir: Path) -> dict[str, Any]:
    """config.json as a dict, refused unless its policy type and backbone are ones that load no code or
    weights by name (see module doc). Imports the installed policy plugins first (their types count)."""


    register_policy_plugins()
    path = pretrained_dir / "config.json"
    config = read_json_object(path)
    policy_type = config.get("type")
    loadable = loadable_policy_types()
    if policy_type not in loadable:
        raise CheckpointError(
            f"{path}: policy type {policy_type!r} is not one this workspace loads; known types: {loadable}. "
            "Install the policy plugin that provides it (a `koch_runtime.policies` entry point), or use a "
            "checkpoint of a known type"
        )
    backbone = config.get("vision_backbone")
    if backbone is not None and backbone not in torchvision.models.list_models(module=torchvision.models):
        raise CheckpointError(f"{path}: vision_backbone {backbone!r} is not a torchvision classification model "
                              "(e.g. 'resnet18'); use a checkpoint written by `train`")
    weights = config.get("pretrained_backbone_weights")
    if weights is not None:
        raise CheckpointError(
            f"{path}: pretrained_backbone_weights is {weights!r}, which would be downloaded when the model is "
            "built; a checkpoint's weights are all in its model.safetensors. Set it to null in config.json (only "
            "if the checkpoint was trained without pretrained backbone weights) or re-train with `train`"
        )
    return config


def load_policy_config(pretrained_dir: Path) -> Any:
    """LeRobot's PreTrainedConfig for the checkpoint, after `check_policy_config_file`; its parse errors
    (an unknown feature type, a wrong value) as one-line CheckpointErrors naming config.json."""

    check_policy_config_file(pretrained_dir)
    try:
        config = PreTrainedConfig.from_pretrained(pretrained_dir)
    except Exception as exc:  # draccus' DecodingError / ParsingError, or a config class's own check
        raise CheckpointError(f"{pretrained_dir / 'config.json'} is not a valid policy config: {one_line(exc)}; use "
                              "a checkpoint written by `train`") from None
    # draccus lets null through for any field; these two every later step reads as mappings
    if not isinstance(config.input_features, dict) or not isinstance(config.output_features, dict) \
            or ACTION_KEY not in config.output_features:
        raise CheckpointError(f"{pretrained_dir / 'config.json'}: input_features and output_features must be "
                              f"mappings, output_features with {ACTION_KEY!r}; use a checkpoint written by `train`")
    for key, feature in {**config.input_features, **config.output_features}.items():
        shape = getattr(feature, "shape", None)
        if not isinstance(shape, (list, tuple)) or not shape or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise CheckpointError(f"{pretrained_dir / 'config.json'}: feature {key!r} has shape {shape!r}, not a "
                                  "list of positive sizes; use a checkpoint written by `train`")
    return config


def check_feature_specs(pretrained_dir: Path, config: Any) -> dict[str, dict[str, Any]]:
    """The checkpoint's koch_features.json, checked to describe the policy's inputs and action."""
    path = pretrained_dir / FEATURE_SPECS_FILE
    specs = read_json_object(path)
    for key in [*config.input_features, ACTION_KEY]:
        spec = specs.get(key)
        if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list):
            raise CheckpointError(f"{path} has no feature spec (dtype, shape, names) for {key!r}; use a checkpoint "
                                  "written by `train`")
        names = spec.get("names")
        if key in (ACTION_KEY, STATE_KEY) and names is not None and (
                not isinstance(names, list) or len(names) != math.prod(spec["shape"])):
            raise CheckpointError(f"{path}: {key} has names {names} but shape {spec['shape']}; use a checkpoint "
                                  "written by `train`")
    return specs


def check_checkpoint_files(pretrained_dir: Path) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Everything above for one pretrained_model folder, before LeRobot reads more than config.json
    (parsed only once its names passed); returns (LeRobot's PreTrainedConfig, the feature specs)."""
    config = load_policy_config(pretrained_dir)
    check_safetensors_file(pretrained_dir / "model.safetensors")
    for filename in PROCESSOR_FILES:
        check_processor_file(pretrained_dir, filename)
    return config, check_feature_specs(pretrained_dir, config)


def check_joint_names(feature_specs: Mapping[str, Mapping[str, Any]], input_keys: Iterable[str],
                      robot_joints: Sequence[str], where: Path | str) -> None:
    """Refuse a checkpoint whose action (and state, when it is an input) joint names are not the robot's,
    in the robot's order.

    A checkpoint without joint names is refused too, rather than accepted when the count matches: the
    count says nothing about the order, and a policy driving the wrist with the shoulder's command is the
    failure this check exists for. Every checkpoint `train` writes from a converted dataset has names;
    one without was trained on data that did not record which column is which joint.
    """
    robot = list(robot_joints)
    keys = [ACTION_KEY] + ([STATE_KEY] if STATE_KEY in set(input_keys) else [])
    for key in keys:
        names = (feature_specs.get(key) or {}).get("names")
        if names is None:
            raise CheckpointError(
                f"{where}: the checkpoint records no joint names for {key}, so which joint each column drives is "
                f"unknown (the robot's are {robot}); re-train from a dataset converted by bag_to_lerobot, which "
                "records them"
            )
        if list(names) != robot:
            raise CheckpointError(
                f"{where}: the checkpoint's {key} joints {list(names)} are not the robot's {robot} (koch.yaml "
                "follower joints, in order); it was trained for another arm or joint order. Use a checkpoint "
                "trained on this robot's data"
            )


def load_processors(pretrained_dir: Path, config: Any, device: str,
                    tokenizer_dir: Path | None = None) -> tuple[Any, Any]:
    """The checkpoint's pre- and post-processor pipelines (LeRobot's), built only after `check_processor_file`
    passed for both, on `device` (the device it was trained on need not be the one it runs on).
    `tokenizer_dir`: the local folder the tokenizer step loads (a VLA's, carried in its checkpoint)."""

    for filename in PROCESSOR_FILES:
        check_processor_file(pretrained_dir, filename)
    try:
        overrides: dict[str, Any] = {"device_processor": {"device": device}}
        if tokenizer_dir is not None:
            overrides["tokenizer_processor"] = {"tokenizer_name": str(tokenizer_dir)}
        return make_pre_post_processors(config, pretrained_path=str(pretrained_dir),
                                        preprocessor_overrides=overrides)
    except (ValueError, KeyError, TypeError, ImportError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{pretrained_dir}: its processor pipelines ({', '.join(PROCESSOR_FILES)}) cannot be "
                              f"built: {one_line(exc)}; use a checkpoint written by `train`") from None
