"""Each buildable policy type learns: a few real optimiser steps lower its loss on a real dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import HEIGHT, TABLE_MM, TARGET_MM, WIDTH
from synthetic_reach import SyntheticDataset

from koch_common.config import ConfigError
from koch_runtime.build import build_policy
from koch_runtime.torch_runtime import PolicyRuntime
from kuavo_train.config import DatasetConfig
from kuavo_train.data import infinite_batches, load_metadata, open_dataset
from kuavo_train.train import train_step

pytestmark = [pytest.mark.video, pytest.mark.training]

RGB = ["observation.state", "observation.images.head"]
RGBD = [*RGB, "observation.images.head_depth"]
TINY_DIFFUSION: dict[str, Any] = {
    "horizon": 8, "n_action_steps": 4, "n_obs_steps": 2, "down_dims": [16, 32], "crop_shape": None,
    "spatial_softmax_num_keypoints": 8, "diffusion_step_embed_dim": 16, "kernel_size": 3, "n_groups": 4,
    "num_train_timesteps": 20, "num_inference_steps": 4,
}
TINY_RGBD: dict[str, Any] = {**TINY_DIFFUSION, "d_model": 32, "n_heads": 2, "n_denoiser_layers": 1}


def tiny(dataset: SyntheticDataset, policy_type: str, overrides: dict[str, Any], inputs: list[str]) -> PolicyRuntime:
    meta = load_metadata(DatasetConfig(repo_id=dataset.repo_id, root=str(dataset.root)))
    return build_policy(policy_type, overrides, meta.features, meta.stats, inputs)


def loss_with_fixed_noise(runtime: PolicyRuntime, batch: dict[str, Any]) -> float:
    """The training loss with the diffusion noise / timesteps / dropout drawn from one fixed seed."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(1234)
        return float(runtime.policy.forward(runtime.preprocessor(batch))[0])


@pytest.mark.parametrize(
    ("policy_type", "overrides", "inputs"),
    [
        ("diffusion", TINY_DIFFUSION, RGB),
        ("diffusion", TINY_DIFFUSION, RGBD),  # LeRobot's diffusion, depth as an extra (grey) image
        ("rgbd_diffusion", {**TINY_RGBD, "denoiser": "unet"}, RGBD),
        ("rgbd_diffusion", {**TINY_RGBD, "denoiser": "transformer"}, RGBD),
    ],
    ids=["diffusion", "diffusion_depth", "rgbd_unet", "rgbd_transformer"],
)
def test_a_few_steps_lower_the_loss_and_the_checkpoint_reloads(
    rgbd_dataset: SyntheticDataset, tmp_path: Path, policy_type: str, overrides: dict[str, Any], inputs: list[str]
) -> None:
    torch.manual_seed(0)
    runtime = tiny(rgbd_dataset, policy_type, overrides, inputs)
    dataset = open_dataset(DatasetConfig(repo_id=rgbd_dataset.repo_id, root=str(rgbd_dataset.root)),
                           runtime.config, inputs)
    cameras = {k: v for k, v in runtime.feature_specs.items() if k.startswith("observation.images")}
    batch = next(infinite_batches(dataset, batch_size=6, num_workers=0, seed=0, cameras=cameras))
    assert batch["observation.images.head"].shape[:2] == (6, 2)  # n_obs_steps history
    optimizer = torch.optim.AdamW(runtime.policy.parameters(), lr=5e-3)
    before = loss_with_fixed_noise(runtime, batch)
    for _ in range(10):
        train_step(runtime, batch, optimizer, None, grad_clip_norm=10.0)
    after = loss_with_fixed_noise(runtime, batch)
    assert after < 0.95 * before, (before, after)  # same noise and timesteps: a real decrease

    # Saved in LeRobot's from_pretrained format and loaded back through the same runtime.
    runtime.save(tmp_path / "pretrained_model")
    loaded = PolicyRuntime.load(tmp_path)
    assert type(loaded.policy) is type(runtime.policy) and loaded.config.type == policy_type
    observation = {"observation.state": np.zeros(6, np.float32)}
    observation.update({k: np.full((48, 64, 3), 128, np.uint8) for k in inputs if "images" in k})
    if "observation.images.head_depth" in inputs:  # a live depth map: uint16 millimetres, as recorded
        observation["observation.images.head_depth"] = np.full((48, 64, 1), 420, np.uint16)
    torch.manual_seed(5)
    chunk = loaded.predict_chunk(observation)
    assert chunk.shape == (overrides["n_action_steps"], 6) and np.all(np.isfinite(chunk))
    assert loaded.flow_steps is None
    with pytest.raises(ValueError, match="flow-matching"):
        loaded.flow_steps = 2


def test_converter_depth_reaches_the_depth_encoder_as_a_map_in_metres(rgbd_dataset: SyntheticDataset) -> None:
    """A depth map written as the converter writes it arrives at rgbd_diffusion's depth encoder as a
    one-channel image of the recorded shape holding metres, in training and from a live observation."""
    torch.manual_seed(0)
    runtime = tiny(rgbd_dataset, "rgbd_diffusion", TINY_RGBD, RGBD)
    seen: list[torch.Tensor] = []
    encoder = runtime.policy.diffusion.encoder.encoders["observation_images_head_depth"]
    encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))

    dataset = open_dataset(DatasetConfig(repo_id=rgbd_dataset.repo_id, root=str(rgbd_dataset.root)),
                           runtime.config, RGBD)
    cameras = {k: v for k, v in runtime.feature_specs.items() if k.startswith("observation.images")}
    batch = next(infinite_batches(dataset, batch_size=4, num_workers=0, seed=0, cameras=cameras))
    with torch.no_grad():
        runtime.policy.forward(runtime.preprocessor(batch))
    steps = TINY_RGBD["n_obs_steps"]
    assert seen[-1].shape == (4 * steps, 1, HEIGHT, WIDTH)
    np.testing.assert_allclose(torch.unique(seen[-1]).numpy(), [TARGET_MM / 1000, TABLE_MM / 1000], atol=1e-6)

    seen.clear()
    live = np.full((HEIGHT, WIDTH, 1), 612, np.uint16)  # what the node hands over: millimetres as recorded
    live[5:9, 7:11] = 305
    runtime.predict_chunk({"observation.state": np.zeros(6, np.float32),
                           "observation.images.head": np.full((HEIGHT, WIDTH, 3), 128, np.uint8),
                           "observation.images.head_depth": live})
    assert seen[-1].shape == (steps, 1, HEIGHT, WIDTH)
    np.testing.assert_allclose(torch.unique(seen[-1]).numpy(), [0.305, 0.612], atol=1e-6)


def test_vla_policies_need_local_weights_and_say_how_to_get_them(
    reach_dataset: SyntheticDataset, tmp_path: Path
) -> None:
    meta = load_metadata(DatasetConfig(repo_id=reach_dataset.repo_id, root=str(reach_dataset.root)))
    with pytest.raises(ConfigError, match="pretrained_path.*huggingface-cli download lerobot/smolvla_base"):
        build_policy("smolvla", {}, meta.features, meta.stats, RGB)
    missing = tmp_path / "pi0_weights"
    with pytest.raises(ConfigError, match=f"{missing}.*huggingface-cli download lerobot/pi0_base"):
        build_policy("pi0", {}, meta.features, meta.stats, RGB, pretrained_path=str(missing))


TINY_SMOLVLA: dict[str, Any] = {"chunk_size": 8, "n_action_steps": 8, "num_steps": 3, "tokenizer_max_length": 16,
                                "freeze_vision_encoder": False, "train_expert_only": False}


def test_smolvla_trains_on_a_backbone_built_here_and_its_checkpoint_carries_it(
    rgbd_dataset: SyntheticDataset, tmp_path: Path
) -> None:
    """SmolVLA from scratch with no download: a few steps lower its loss on the dataset's frames and task
    text; the checkpoint reloads with the backbone it carries, refuses to act without an instruction,
    and its chunk depends on the instruction's words."""
    from koch_runtime.observation import PolicyInputError
    from koch_runtime.vlm_backbone import BACKBONE_DIR, SmolVLMBackbone, build_backbone, smolvla_overrides

    torch.manual_seed(0)
    meta = load_metadata(DatasetConfig(repo_id=rgbd_dataset.repo_id, root=str(rgbd_dataset.root)))
    tasks = [str(t) for t in meta.tasks.index]
    spec = SmolVLMBackbone()
    backbone = build_backbone(tmp_path / "run" / BACKBONE_DIR, tasks, spec)
    runtime = build_policy("smolvla", {**smolvla_overrides(backbone, spec), **TINY_SMOLVLA},
                           meta.features, meta.stats, RGB)
    dataset = open_dataset(DatasetConfig(repo_id=rgbd_dataset.repo_id, root=str(rgbd_dataset.root)),
                           runtime.config, RGB)
    batch = next(infinite_batches(dataset, batch_size=6, num_workers=0, seed=0))
    assert list(batch["task"]) == [tasks[0]] * 6
    tokens = runtime.preprocessor(batch)["observation.language.tokens"]
    unknown = runtime.preprocessor.steps[[type(s).__name__ for s in runtime.preprocessor.steps].index(
        "TokenizerProcessorStep")].input_tokenizer.unk_token_id
    assert not (tokens == unknown).any(), "every word of the dataset's task text is in the vocabulary"
    optimizer = torch.optim.AdamW(runtime.policy.parameters(), lr=3e-3)
    before = loss_with_fixed_noise(runtime, batch)
    for _ in range(15):
        train_step(runtime, batch, optimizer, None, grad_clip_norm=10.0)
    after = loss_with_fixed_noise(runtime, batch)
    assert after < 0.9 * before, (before, after)

    runtime.save(tmp_path / "checkpoint" / "pretrained_model")
    import shutil

    shutil.rmtree(tmp_path / "run")  # the folder training built the backbone in is gone on the robot
    loaded = PolicyRuntime.load(tmp_path / "checkpoint")
    assert loaded.needs_task and Path(loaded.config.vlm_model_name).parent == tmp_path / "checkpoint" / \
        "pretrained_model"
    observation = {"observation.state": np.zeros(6, np.float32),
                   "observation.images.head": np.full((48, 64, 3), 128, np.uint8)}
    with pytest.raises(PolicyInputError, match="task instruction"):
        loaded.predict_chunk(observation)

    def chunk_for(task: str) -> np.ndarray:
        loaded.task = task
        torch.manual_seed(5)  # the same flow-matching noise for both instructions
        return loaded.predict_chunk(observation)

    chunk = chunk_for(tasks[0])
    assert chunk.shape == (TINY_SMOLVLA["chunk_size"], 6) and np.all(np.isfinite(chunk))
    np.testing.assert_array_equal(chunk, chunk_for(tasks[0]))
    assert np.abs(chunk - chunk_for("move left")).max() > 1e-4, "the instruction conditions the chunk"

    # Real-Time Chunking: guided towards a plan the model would not make itself, the chunk's first actions
    # (those the robot runs while the model infers) follow that plan; later ones are free.
    loaded.task = tasks[0]
    plan, delay = chunk + 0.3, 4
    torch.manual_seed(5)
    guided = loaded.predict_guided(observation, plan, delay)
    unguided_error = np.abs(chunk[:delay] - plan[:delay]).mean()
    guided_error = np.abs(guided[:delay] - plan[:delay]).mean()
    assert guided_error < 0.5 * unguided_error, (guided_error, unguided_error)  # 3 denoising steps here

    # The integration steps are the deploy's choice (the node's flow_steps): the same model, integrated coarser.
    assert loaded.flow_steps == TINY_SMOLVLA["num_steps"]
    loaded.flow_steps = 1
    torch.manual_seed(5)
    assert np.abs(loaded.predict_chunk(observation) - chunk).max() > 1e-5


# pi0 at the smallest size LeRobot 0.4.4 builds (PaliGemma fixes the rest): ~1.3B parameters, 5 GB in float32.
# The VLM is frozen (train_expert_only) so that the optimiser state fits beside it on a CI machine.
PI0_SMALLEST: dict[str, Any] = {
    "paligemma_variant": "gemma_300m", "action_expert_variant": "gemma_300m", "image_resolution": (112, 112),
    "chunk_size": 8, "n_action_steps": 8, "num_inference_steps": 2, "tokenizer_max_length": 16,
    "train_expert_only": True,
}


def pi0_velocities(model: Any, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One flow-matching velocity of `model` (PI0Pytorch) for a random input, three ways: through the joint
    prefix + suffix pass training uses, and through two denoising steps on one cached prefix (inference)."""
    from lerobot.policies.pi0.modeling_pi0 import OPENPI_ATTENTION_MASK_VALUE, make_att_2d_masks

    def mask_4d(mask_2d: torch.Tensor) -> torch.Tensor:
        return torch.where(mask_2d[:, None], 0.0, OPENPI_ATTENTION_MASK_VALUE)

    generator = torch.Generator().manual_seed(3)
    images = [torch.rand(1, 3, 112, 112, generator=generator) * 2 - 1]
    tokens = torch.randint(0, 20, (1, 16), generator=generator)
    state = torch.randn(1, model.config.max_state_dim, generator=generator)
    x_t = torch.randn(1, chunk_size, model.config.max_action_dim, generator=generator)
    time = torch.full((1,), 0.7)
    with torch.no_grad():
        prefix, prefix_pad, prefix_att = model.embed_prefix(images, [torch.ones(1, dtype=torch.bool)], tokens,
                                                            torch.ones(1, 16, dtype=torch.bool))
        suffix, suffix_pad, suffix_att, adarms = model.embed_suffix(state, x_t, time)
        pad, att = torch.cat([prefix_pad, suffix_pad], 1), torch.cat([prefix_att, suffix_att], 1)
        (_, suffix_out), _ = model.paligemma_with_expert.forward(
            attention_mask=mask_4d(make_att_2d_masks(pad, att)), position_ids=torch.cumsum(pad, 1) - 1,
            past_key_values=None, inputs_embeds=[prefix, suffix], use_cache=False, adarms_cond=[None, adarms])
        joint = model.action_out_proj(suffix_out[:, -chunk_size:].float())
        _, cache = model.paligemma_with_expert.forward(
            attention_mask=mask_4d(make_att_2d_masks(prefix_pad, prefix_att)),
            position_ids=torch.cumsum(prefix_pad, 1) - 1, past_key_values=None, inputs_embeds=[prefix, None],
            use_cache=True)
        cached = [model.denoise_step(state, prefix_pad, cache, x_t, time) for _ in range(2)]
    return joint, cached[0], cached[1]


def test_pi0_at_its_smallest_trains_reloads_and_acts_within_the_safety_limits(
    rgbd_dataset: SyntheticDataset, tmp_path: Path
) -> None:
    """pi0 on the installed (stock) transformers through lerobot_compat's adaptation: its training and
    inference passes agree, a few steps lower its loss on a fixed batch, and the checkpoint reloads through
    the node's runtime with the tokenizer it carries, gives a chunk the safety layer keeps in limits, and
    follows a plan under Real-Time Chunking's guidance."""
    import gc
    import shutil

    from koch_common.robot import load_koch
    from koch_common.safety import SafetyLimits
    from koch_runtime.vlm_backbone import TOKENIZER_DIR, build_tokenizer

    torch.manual_seed(0)
    meta = load_metadata(DatasetConfig(repo_id=rgbd_dataset.repo_id, root=str(rgbd_dataset.root)))
    tasks = [str(t) for t in meta.tasks.index]
    tokenizer = build_tokenizer(tmp_path / "run" / TOKENIZER_DIR, tasks)
    runtime = build_policy("pi0", PI0_SMALLEST, meta.features, meta.stats, RGB, tokenizer_dir=str(tokenizer))
    chunk_size = PI0_SMALLEST["chunk_size"]
    joint, cached, cached_again = pi0_velocities(runtime.policy.model, chunk_size)
    np.testing.assert_allclose(cached.numpy(), joint.numpy(), atol=1e-4, rtol=1e-3)
    np.testing.assert_array_equal(cached_again.numpy(), cached.numpy())  # the prefix cache is read, not grown

    dataset = open_dataset(DatasetConfig(repo_id=rgbd_dataset.repo_id, root=str(rgbd_dataset.root)),
                           runtime.config, RGB)
    batch = next(infinite_batches(dataset, batch_size=2, num_workers=0, seed=0))
    optimizer = torch.optim.AdamW([p for p in runtime.policy.parameters() if p.requires_grad], lr=1e-5)
    before = loss_with_fixed_noise(runtime, batch)
    for _ in range(3):
        train_step(runtime, batch, optimizer, None, grad_clip_norm=1.0)
    after = loss_with_fixed_noise(runtime, batch)
    assert after < 0.9 * before, (before, after)

    runtime.save(tmp_path / "checkpoint" / "pretrained_model")
    del runtime, optimizer
    gc.collect()
    shutil.rmtree(tmp_path / "run")  # the tokenizer travels in the checkpoint
    loaded = PolicyRuntime.load(tmp_path / "checkpoint")
    assert loaded.needs_task and loaded.tokenizer_folder == tmp_path / "checkpoint" / "pretrained_model" / \
        TOKENIZER_DIR
    loaded.task = tasks[0]
    observation = {"observation.state": np.zeros(6, np.float32),
                   "observation.images.head": np.full((48, 64, 3), 128, np.uint8)}
    torch.manual_seed(5)
    chunk = loaded.predict_chunk(observation)
    assert chunk.shape == (chunk_size, 6) and np.all(np.isfinite(chunk))
    # Real-Time Chunking: guided towards a plan, the first actions follow it (as SmolVLA's, above).
    plan, delay = chunk + 0.3, 4
    torch.manual_seed(5)
    guided = loaded.predict_guided(observation, plan, delay)
    assert np.abs(guided[:delay] - plan[:delay]).mean() < 0.5 * np.abs(chunk[:delay] - plan[:delay]).mean()
    koch = load_koch()
    limits = SafetyLimits.for_arm(koch.follower, koch.safety)
    safe = limits.filter_chunk(chunk, measured=(limits.lower + limits.upper) / 2, dt=1 / 30)
    assert np.all(safe >= limits.lower - 1e-9) and np.all(safe <= limits.upper + 1e-9)
