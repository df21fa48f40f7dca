"""Training and the shared policy runtime, on a real LeRobot v3.0 dataset with real torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from synthetic_reach import JOINTS, SyntheticDataset

from koch_common.config import ConfigError
from koch_runtime.build import build_policy
from koch_runtime.observation import PolicyInputError
from koch_runtime.torch_runtime import PolicyRuntime
from kuavo_train.config import DatasetConfig, load_train_config
from kuavo_train.data import infinite_batches, load_metadata, open_dataset
from kuavo_train.train import main, train_step

pytestmark = [pytest.mark.video, pytest.mark.training]

INPUTS = ["observation.state", "observation.images.head"]
TINY_ACT: dict[str, Any] = {
    "chunk_size": 5,
    "n_action_steps": 5,
    "dim_model": 32,
    "n_heads": 2,
    "dim_feedforward": 64,
    "n_encoder_layers": 1,
    "n_decoder_layers": 1,
    "use_vae": False,
    "dropout": 0.0,
}


def tiny_runtime(dataset: SyntheticDataset) -> PolicyRuntime:
    meta = load_metadata(DatasetConfig(repo_id=dataset.repo_id, root=str(dataset.root)))
    return build_policy("act", TINY_ACT, meta.features, meta.stats, INPUTS)


def robot_observation(dataset: SyntheticDataset, index: int) -> dict[str, np.ndarray]:
    """What the policy node would assemble live: float32 joints, uint8 HxWx3 RGB."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    frame = LeRobotDataset(dataset.repo_id, root=dataset.root)[index]
    image = (frame["observation.images.head"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return {"observation.state": frame["observation.state"].numpy(), "observation.images.head": image}


def cli_args(dataset: SyntheticDataset, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", "train/act_sim.yaml",
        f"dataset.root={dataset.root}", f"dataset.repo_id={dataset.repo_id}", f"output_dir={output_dir}",
        "steps=3", "batch_size=4", "num_workers=0", "log_every=1", "save_every=2", "warmup_steps=1",
        "export_onnx=false",  # the export at the end is test_eval_export's
        *extra,
    ]


def test_training_steps_lower_the_loss_on_a_fixed_batch(reach_dataset: SyntheticDataset) -> None:
    torch.manual_seed(0)
    runtime = tiny_runtime(reach_dataset)
    dataset = open_dataset(
        DatasetConfig(repo_id=reach_dataset.repo_id, root=str(reach_dataset.root)), runtime.config, INPUTS
    )
    batch = next(infinite_batches(dataset, batch_size=4, num_workers=0, seed=0))
    assert batch["action"].shape == (4, TINY_ACT["chunk_size"], 6)
    optimizer = torch.optim.AdamW(runtime.policy.parameters(), lr=3e-4)
    losses = [train_step(runtime, batch, optimizer, None, grad_clip_norm=10.0)["loss"] for _ in range(20)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses


def test_saved_runtime_predicts_exactly_like_the_in_memory_one(
    reach_dataset: SyntheticDataset, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    runtime = tiny_runtime(reach_dataset)
    dataset = open_dataset(
        DatasetConfig(repo_id=reach_dataset.repo_id, root=str(reach_dataset.root)), runtime.config, INPUTS
    )
    batches = infinite_batches(dataset, batch_size=4, num_workers=0, seed=0)
    optimizer = torch.optim.AdamW(runtime.policy.parameters(), lr=1e-3)
    for _ in range(3):  # move the weights away from their seeded initialisation
        train_step(runtime, next(batches), optimizer, None, grad_clip_norm=10.0)
    observation = robot_observation(reach_dataset, index=40)

    in_memory = runtime.predict_chunk(observation)
    runtime.save(tmp_path / "pretrained_model")
    loaded = PolicyRuntime.load(tmp_path)

    assert in_memory.shape == (TINY_ACT["chunk_size"], 6)
    assert in_memory.dtype == np.float32
    np.testing.assert_allclose(loaded.predict_chunk(observation), in_memory, rtol=0, atol=1e-6)
    assert loaded.action_names == JOINTS
    assert loaded.feature_names("observation.state") == JOINTS
    assert (loaded.chunk_size, loaded.n_action_steps) == (5, 5)
    assert set(loaded.input_features) == set(INPUTS)


def test_robot_observation_becomes_the_tensors_the_dataset_yields(reach_dataset: SyntheticDataset) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    runtime = tiny_runtime(reach_dataset)
    frame = LeRobotDataset(reach_dataset.repo_id, root=reach_dataset.root)[7]
    batch = runtime.check_observation.batch(robot_observation(reach_dataset, index=7))
    for key in INPUTS:
        assert batch[key].dtype == torch.float32
        torch.testing.assert_close(batch[key][0], frame[key], rtol=0, atol=1e-6)


def test_train_cli_writes_checkpoints_that_the_runtime_loads(
    reach_dataset: SyntheticDataset, tmp_path: Path
) -> None:
    output_dir = tmp_path / "run"
    assert main(cli_args(reach_dataset, output_dir)) == 0

    checkpoints = output_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["000002", "000003", "last"]
    assert (checkpoints / "last").resolve() == (checkpoints / "000003").resolve()
    log = [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3]
    assert all(np.isfinite(record["loss"]) and record["samples_per_s"] > 0 for record in log)

    runtime = PolicyRuntime.load(checkpoints / "last")
    configured = load_train_config("train/act_sim.yaml").policy.overrides
    assert runtime.chunk_size == configured["chunk_size"]
    assert runtime.n_action_steps == configured["n_action_steps"]
    assert runtime.config.pretrained_backbone_weights is None
    actions = runtime.predict_chunk(robot_observation(reach_dataset, index=3))
    assert actions.shape == (configured["chunk_size"], 6) and actions.dtype == np.float32
    assert np.all(np.isfinite(actions))

    # A second run into the same folder must not silently mix checkpoints.
    assert main(cli_args(reach_dataset, output_dir)) == 2


def test_missing_dataset_feature_is_named_with_the_features_present(
    reach_dataset: SyntheticDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(
        reach_dataset, tmp_path / "run", "policy.input_features=[observation.state, observation.images.wrist]"
    )
    assert main(args) == 2
    message = capsys.readouterr().err
    assert "observation.images.wrist" in message
    assert "observation.images.head" in message  # the features the dataset does have


@pytest.mark.parametrize(
    ("override", "named"),
    [("stepz=3", "stepz"), ("policy.overrides.dim_modle=64", "dim_modle"), ("dataset.rooot=/x", "rooot")],
)
def test_unknown_config_key_is_rejected_by_name(
    reach_dataset: SyntheticDataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
    named: str,
) -> None:
    assert main(cli_args(reach_dataset, tmp_path / "run", override)) == 2
    message = capsys.readouterr().err
    assert named in message and "valid keys" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_pretrained_backbone_download_is_refused(reach_dataset: SyntheticDataset) -> None:
    meta = load_metadata(DatasetConfig(repo_id=reach_dataset.repo_id, root=str(reach_dataset.root)))
    overrides = {**TINY_ACT, "pretrained_backbone_weights": "ResNet18_Weights.IMAGENET1K_V1"}
    with pytest.raises(ConfigError, match="pretrained_backbone_weights must be null"):
        build_policy("act", overrides, meta.features, meta.stats, INPUTS)


def test_observation_of_the_wrong_size_is_refused(reach_dataset: SyntheticDataset) -> None:
    runtime = tiny_runtime(reach_dataset)
    observation = robot_observation(reach_dataset, index=0)
    observation["observation.images.head"] = np.zeros((480, 640, 3), dtype=np.uint8)
    with pytest.raises(PolicyInputError, match=r"\(96, 128, 3\)"):
        runtime.predict_chunk(observation)
    with pytest.raises(PolicyInputError, match="observation.state"):
        runtime.predict_chunk({"observation.images.head": np.zeros((96, 128, 3), dtype=np.uint8)})


def test_missing_dataset_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="meta/info.json"):
        load_metadata(DatasetConfig(repo_id="local/none", root=str(tmp_path / "nowhere")))


def test_train_cli_trains_smolvla_from_scratch_with_no_download(
    reach_dataset: SyntheticDataset, tmp_path: Path
) -> None:
    """`policy.type=smolvla` without pretrained weights: train builds the backbone into the run folder and
    every checkpoint carries a copy, so the checkpoint loads where the run folder is not."""
    output_dir = tmp_path / "run"
    args = cli_args(reach_dataset, output_dir)
    args[1] = "train/smolvla_pick_color.yaml"
    assert main([*args, "policy.overrides.chunk_size=6", "policy.overrides.n_action_steps=6",
                 "policy.overrides.num_steps=2"]) == 0
    assert (output_dir / "vlm_backbone" / "tokenizer.json").is_file()
    moved = tmp_path / "robot"
    shutil.copytree(output_dir / "checkpoints" / "last", moved)
    shutil.rmtree(output_dir)
    runtime = PolicyRuntime.load(moved)
    assert runtime.policy_type == "smolvla" and runtime.needs_task
    runtime.task = "reach the red target"
    actions = runtime.predict_chunk(robot_observation(reach_dataset, index=3))
    assert actions.shape == (6, 6) and np.all(np.isfinite(actions))
