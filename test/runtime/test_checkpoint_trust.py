"""A checkpoint is data, never code: every name a checkpoint's JSON holds is checked against allow-lists
before LeRobot reads it, its files must be whole, and its joints must be the robot's (checkpoint_trust)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_checkpoint import JOINTS, tiny_observation

from koch_runtime import checkpoint_trust
from koch_runtime.checkpoint_trust import (
    CheckpointError,
    allow_processor_step,
    allowed_processor_steps,
    check_safetensors_file,
)
from koch_runtime.factory import load_runtime, robot_joint_names
from koch_runtime.torch_runtime import PolicyRuntime

pytestmark = pytest.mark.training

PRE = "policy_preprocessor.json"


def edit_json(path: Path, edit: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def refused(checkpoint: Path, pattern: str) -> str:
    """The one-line CheckpointError that loading `checkpoint` raises (through the robot's entry point)."""
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_runtime(checkpoint)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_tiny_checkpoint_loads_and_its_joints_are_the_robots(tiny_checkpoint: Path) -> None:
    assert robot_joint_names() == JOINTS
    runtime = load_runtime(tiny_checkpoint)
    assert runtime.predict_chunk(tiny_observation()).shape == (2, 6)


def test_a_processor_step_naming_os_system_does_not_run(tiny_checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    edit_json(tiny_checkpoint / PRE, lambda d: d["steps"].insert(
        0, {"class": "os.system", "config": {"command": f"touch {marker}"}}))
    message = refused(tiny_checkpoint, r"policy_preprocessor\.json: step 0 names the import path 'os\.system'")
    assert str(tiny_checkpoint) in message and "re-train" in message
    assert not marker.exists(), "the checkpoint ran its command"
    for load in (PolicyRuntime.load, load_runtime):  # kuavo_eval / kuavo_export load through PolicyRuntime
        with pytest.raises(CheckpointError, match="os.system"):
            load(tiny_checkpoint)
    assert not marker.exists()


def test_an_import_path_is_refused_before_it_is_imported(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even the path of a real step class, or a registry name beside it: nothing named by path is imported."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_step_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Step: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for step in ({"class": "evil_step_module.Step"},
                 {"registry_name": "normalizer_processor", "class": "evil_step_module.Step"},
                 {"class": "lerobot.processor.normalize_processor.NormalizerProcessorStep"}):
        edit_json(tiny_checkpoint / "policy_postprocessor.json", lambda d, step=step: d["steps"].__setitem__(1, step))
        refused(tiny_checkpoint, r"policy_postprocessor\.json: step 1 names the import path")
    assert not marker.exists() and "evil_step_module" not in sys.modules


@pytest.mark.parametrize(
    ("name", "why"),
    [("action_tokenizer_processor", "registered, but loads a tokenizer with trust_remote_code"),
     ("reward_classifier_processor", "registered, but loads a model with trust_remote_code"),
     ("no_such_step", "not registered at all")],
)
def test_a_step_outside_the_allow_list_is_refused(tiny_checkpoint: Path, name: str, why: str) -> None:
    edit_json(tiny_checkpoint / PRE, lambda d: d["steps"].__setitem__(0, {"registry_name": name, "config": {}}))
    message = refused(tiny_checkpoint, rf"step 0 '{name}' is not an allowed processor step")
    assert "normalizer_processor" in message  # the allowed ones are listed


def test_a_plugin_may_allow_its_own_registered_step(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lerobot.processor import ProcessorStepRegistry, RenameObservationsProcessorStep

    monkeypatch.setattr(checkpoint_trust, "_plugin_steps", set())
    ProcessorStepRegistry.register("koch_test_rename")(type("KochTestRename", (RenameObservationsProcessorStep,), {}))
    try:
        edit_json(tiny_checkpoint / PRE,
                  lambda d: d["steps"].__setitem__(0, {"registry_name": "koch_test_rename", "config": {}}))
        refused(tiny_checkpoint, "'koch_test_rename' is not an allowed processor step")
        allow_processor_step("koch_test_rename")
        assert "koch_test_rename" in allowed_processor_steps()
        load_runtime(tiny_checkpoint)
    finally:
        ProcessorStepRegistry.unregister("koch_test_rename")


@pytest.mark.parametrize("state_file",
                         ["../model.safetensors", "/etc/passwd", "user/repo.safetensors", "absent.safetensors"])
def test_a_state_file_outside_the_folder_is_refused(tiny_checkpoint: Path, state_file: str) -> None:
    edit_json(tiny_checkpoint / PRE, lambda d: d["steps"][3].__setitem__("state_file", state_file))
    refused(tiny_checkpoint, "state_file|is missing")


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda step: step["config"]["features"]["action"].__setitem__("type", "os.system"), "cannot be built"),
    (lambda step: step["config"]["norm_map"].__setitem__("ACTION", "EXEC"), "cannot be built"),
    (lambda step: step.__setitem__("config", "os.system"), "has a 'config' that is not an object"),
])
def test_a_step_config_naming_an_unknown_type_is_one_line(
    tiny_checkpoint: Path, edit: Callable[[dict[str, Any]], None], pattern: str
) -> None:
    edit_json(tiny_checkpoint / PRE, lambda d: edit(d["steps"][3]))  # the normaliser
    refused(tiny_checkpoint, pattern)


def test_the_allowed_steps_are_lerobots_registered_ones() -> None:
    """A LeRobot upgrade that renames one fails here (then review SAFE_PROCESSOR_STEPS: does each still
    build from its JSON config and safetensors state alone?)."""
    from lerobot.processor import ProcessorStepRegistry

    registered = ProcessorStepRegistry.list()
    pi05_only = {"pi05_prepare_state_tokenizer_processor_step"}  # registered when pi05's processors are imported
    assert set(checkpoint_trust.SAFE_PROCESSOR_STEPS) - pi05_only <= set(registered)


def test_an_unknown_policy_type_is_one_line_listing_the_known_ones(tiny_checkpoint: Path) -> None:
    for policy_type in ("nope", "sac", "os.system"):
        edit_json(tiny_checkpoint / "config.json", lambda d, t=policy_type: d.__setitem__("type", t))
        message = refused(tiny_checkpoint, rf"config\.json: policy type '{policy_type}' is not one this workspace")
        assert "'act'" in message and "'diffusion'" in message and "'rgbd_diffusion'" in message


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [("vision_backbone", "system", "vision_backbone 'system' is not a torchvision classification model"),
     ("pretrained_backbone_weights", "ResNet18_Weights.IMAGENET1K_V1", "would be downloaded"),
     ("chunk_size", "many", "config.json is not a valid policy config"),
     ("input_features", {"observation.state": {"type": "os.system", "shape": [6]}}, "not a valid policy config")],
)
def test_other_names_in_config_json_are_checked(tiny_checkpoint: Path, key: str, value: Any, pattern: str) -> None:
    edit_json(tiny_checkpoint / "config.json", lambda d: d.__setitem__(key, value))
    refused(tiny_checkpoint, pattern)


def test_a_truncated_safetensors_file_is_named(tiny_checkpoint: Path) -> None:
    model = tiny_checkpoint / "model.safetensors"
    data = model.read_bytes()
    model.write_bytes(data[:len(data) // 2])
    refused(tiny_checkpoint, rf"{model} is truncated or corrupt.*copy the checkpoint again")
    model.write_bytes(data[:5])
    refused(tiny_checkpoint, rf"{model} is truncated")
    model.write_bytes(b"\xff" * 64)
    refused(tiny_checkpoint, rf"{model} is truncated or corrupt")
    model.write_bytes(data)
    state = tiny_checkpoint / json.loads((tiny_checkpoint / PRE).read_text())["steps"][3]["state_file"]
    state.write_bytes(state.read_bytes()[:-3])
    refused(tiny_checkpoint, rf"{state} is truncated or corrupt")
    check_safetensors_file(model)  # the whole file passes


def test_weights_that_do_not_fit_the_config_are_one_line(tiny_checkpoint: Path) -> None:
    edit_json(tiny_checkpoint / "config.json", lambda d: d.__setitem__("dim_model", 16))
    refused(tiny_checkpoint, r"model\.safetensors cannot be loaded into the act model config\.json describes")


def test_a_corrupt_json_file_is_named(tiny_checkpoint: Path) -> None:
    (tiny_checkpoint / "koch_features.json").write_text('{"action": ')
    refused(tiny_checkpoint, r"koch_features\.json cannot be read .*corrupt or truncated")


def test_a_checkpoint_with_the_joint_order_reversed_is_refused(tiny_checkpoint: Path) -> None:
    edit_json(tiny_checkpoint / "koch_features.json", lambda d: [d[key].__setitem__("names", JOINTS[::-1])
                                                                for key in ("action", "observation.state")])
    message = refused(tiny_checkpoint, r"action joints \['gripper', .*\] are not the robot's \['shoulder_pan'")
    assert str(JOINTS[::-1]) in message and str(JOINTS) in message
    # The offline tools (kuavo_eval) still load it: it is the robot it does not fit.
    assert PolicyRuntime.load(tiny_checkpoint).action_names == JOINTS[::-1]
    # Another robot's joint list, given explicitly.
    load_runtime(tiny_checkpoint, joint_names=JOINTS[::-1])


def test_state_joints_are_checked_too_and_missing_names_are_refused(tiny_checkpoint: Path) -> None:
    specs = tiny_checkpoint / "koch_features.json"
    edit_json(specs, lambda d: d["observation.state"].__setitem__("names", JOINTS[1:] + JOINTS[:1]))
    refused(tiny_checkpoint, r"observation\.state joints .* are not the robot's")
    edit_json(specs, lambda d: d["observation.state"].__setitem__("names", None))
    refused(tiny_checkpoint, r"records no joint names for observation\.state")
    edit_json(specs, lambda d: d["observation.state"].__setitem__("names", JOINTS[:5]))
    refused(tiny_checkpoint, r"observation\.state has names .* but shape \[6\]")


def test_a_good_checkpoint_predicts_the_same_after_the_checks(tiny_checkpoint: Path) -> None:
    first = load_runtime(tiny_checkpoint).predict_chunk(tiny_observation())
    np.testing.assert_array_equal(PolicyRuntime.load(tiny_checkpoint).predict_chunk(tiny_observation()), first)


def write_manifest(checkpoint: Path, graphs: dict[str, str], kind: str = "act") -> Path:
    """An ONNX export folder beside `checkpoint` (the graph files are not real graphs: every check
    below must refuse before onnxruntime opens one)."""
    onnx_dir = checkpoint / "onnx"
    onnx_dir.mkdir(exist_ok=True)
    (onnx_dir / "policy.onnx").write_bytes(b"not a graph")
    manifest = {"format": 2, "kind": kind, "type": "act", "graphs": graphs, "pretrained_model": "..",
                "inputs": ["observation.state", "observation.environment_state"]}
    (onnx_dir / "manifest.json").write_text(json.dumps(manifest))
    return onnx_dir


@pytest.mark.parametrize("graphs", [{"policy": "../model.safetensors"}, {"policy": "/tmp/x.onnx"},
                                    {"policy": "absent.onnx"}, {"encoder": "policy.onnx"}])
def test_an_onnx_manifest_names_only_its_own_graphs(tiny_checkpoint: Path, graphs: dict[str, str]) -> None:
    write_manifest(tiny_checkpoint, graphs)
    refused(tiny_checkpoint, r"onnx/manifest\.json: (graph 'policy' is|kind 'act' with graphs)")


def test_the_onnx_runtime_checks_the_checkpoint_it_was_exported_from(tiny_checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    write_manifest(tiny_checkpoint, {"policy": "policy.onnx"})
    edit_json(tiny_checkpoint / PRE, lambda d: d["steps"].insert(
        0, {"class": "os.system", "config": {"command": f"touch {marker}"}}))
    refused(tiny_checkpoint, r"policy_preprocessor\.json: step 0 names the import path 'os\.system'")
    assert not marker.exists()
