"""The PyTorch policy runtime that training and the robot's policy node share.

Pre-processing (numpy observation -> the tensors LeRobotDataset yields), normalisation (LeRobot's
processor pipelines holding the dataset stats), the model, and post-processing (unnormalisation back
to robot units) are run here exactly once, so what was trained is what runs. Training builds a
PolicyRuntime with koch_runtime.build.build_policy and saves it; the robot loads it (or its ONNX
export, koch_runtime.onnx_runtime) through koch_runtime.factory.load_runtime.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import get_policy_class
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.processor import PolicyProcessorPipeline, TokenizerProcessorStep

from koch_runtime import lerobot_compat
from koch_runtime.checkpoint import (
    FLOW_MATCHING_POLICY_TYPES,
    CheckpointInfo,
    resolve_pretrained_dir,
    write_feature_specs,
)
from koch_runtime.checkpoint_trust import CheckpointError, check_checkpoint_files, load_processors, one_line
from koch_runtime.observation import ACTION_KEY
from koch_runtime.vlm_backbone import BACKBONE_DIR, PI0, SMOLVLA, TOKENIZER_DIR, is_backbone_folder, is_tokenizer_folder


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
        link that contains one. Only JSON and safetensors are read, never pickles, and every name the
        JSON holds (policy type, processor steps, backbone) is checked against allow-lists before
        LeRobot reads it (koch_runtime.checkpoint_trust): a checkpoint cannot name code to run. A
        refused, incomplete or corrupt checkpoint is a one-line CheckpointError naming the file.
        """
        path = resolve_pretrained_dir(checkpoint_dir)
        config, feature_specs = check_checkpoint_files(path)
        config.device = device
        lerobot_compat.run_pi0_on_stock_transformers()
        tokenizer_dir = None
        if config.type == SMOLVLA:
            # Its backbone is the copy inside the checkpoint, whatever folder training built it in.
            backbone = path / BACKBONE_DIR
            if not is_backbone_folder(backbone):
                raise CheckpointError(
                    f"{backbone} is missing: a SmolVLA checkpoint carries its backbone's config and tokenizer "
                    "there (vlm_model_name is never fetched); use a checkpoint written by `train`")
            config.vlm_model_name = str(backbone)
            tokenizer_dir = backbone
        elif config.type == PI0:
            tokenizer_dir = path / TOKENIZER_DIR
            if not is_tokenizer_folder(tokenizer_dir):
                raise CheckpointError(
                    f"{tokenizer_dir} is missing: a pi0 checkpoint carries its tokenizer there (a Hub tokenizer is "
                    "never fetched); use a checkpoint written by `train`")
        try:
            # strict: every weight must match the architecture in config.json, none silently left random.
            policy = get_policy_class(config.type).from_pretrained(path, config=config, strict=True)
        except Exception as exc:  # config.json is untrusted: whatever building its model raises is the file's fault
            raise CheckpointError(
                f"{path / 'model.safetensors'} cannot be loaded into the {config.type} model config.json describes: "
                f"{one_line(exc)}; use a checkpoint written by `train` (weights and config.json of one run)"
            ) from None
        preprocessor, postprocessor = load_processors(path, config, device, tokenizer_dir)
        runtime = cls(policy, preprocessor, postprocessor, feature_specs)
        runtime.reset()
        return runtime

    def save(self, directory: Path | str) -> None:
        """Write the policy (config.json + model.safetensors) and both processors into `directory`."""
        directory = Path(directory)
        self.policy.save_pretrained(directory)
        backbone = Path(getattr(self.config, "vlm_model_name", "") or "")
        if self.config.type == SMOLVLA and is_backbone_folder(backbone) and \
                backbone.resolve() != (directory / BACKBONE_DIR).resolve():
            shutil.copytree(backbone, directory / BACKBONE_DIR, dirs_exist_ok=True)
        tokenizer = self.tokenizer_folder
        if self.config.type == PI0 and tokenizer is not None and is_tokenizer_folder(tokenizer) and \
                tokenizer.resolve() != (directory / TOKENIZER_DIR).resolve():
            shutil.copytree(tokenizer, directory / TOKENIZER_DIR, dirs_exist_ok=True)
        self.preprocessor.save_pretrained(directory)
        self.postprocessor.save_pretrained(directory)
        write_feature_specs(directory, self.feature_specs)

    @property
    def tokenizer_folder(self) -> Path | None:
        """The folder the preprocessor's tokenizer was loaded from (None: no tokenizer step)."""
        names = [s.tokenizer_name for s in self.preprocessor.steps if isinstance(s, TokenizerProcessorStep)]
        return Path(names[0]) if names and names[0] else None

    @property
    def config(self) -> PreTrainedConfig:  # the policy's own, not a separate copy
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
        return self._predict(observation, None)

    @property
    def supports_guidance(self) -> bool:
        return self.policy_type in FLOW_MATCHING_POLICY_TYPES

    def predict_guided(self, observation: Mapping[str, np.ndarray], prefix: np.ndarray,
                       inference_delay: int) -> np.ndarray:
        """A chunk that continues `prefix` (robot units, from the observation's time on): LeRobot's Real-Time
        Chunking steers every denoising step towards it (weight 1 on the first `inference_delay` actions,
        decaying after), so the new chunk agrees with the actions the robot executes while the model infers."""
        if not self.supports_guidance:
            return super().predict_guided(observation, prefix, inference_delay)
        if self.config.rtc_config is None or not self.config.rtc_config.enabled:
            lerobot_compat.enable_rtc(self.policy, execution_horizon=self.n_action_steps)
        actions = torch.as_tensor(np.asarray(prefix, np.float32))[None]
        left_over = lerobot_compat.normalize_actions(self.postprocessor, actions)
        return self._predict(observation, {"prev_chunk_left_over": left_over,
                                           "inference_delay": int(inference_delay)})

    def _predict(self, observation: Mapping[str, np.ndarray], guidance: dict[str, Any] | None) -> np.ndarray:
        batch: dict[str, Any] = self.with_task(self.check_observation.batch(observation))
        # RTC's guidance differentiates through the denoiser: grad mode must be available (no_grad, whose
        # enable_grad inside works), where plain inference runs under inference_mode.
        with torch.no_grad() if guidance else torch.inference_mode():
            # The processors' batch carries an empty 'action' entry; a queue-based policy would read it.
            batch = {k: v for k, v in self.preprocessor(batch).items() if k != ACTION_KEY}
            batch = self._observe(batch)
            started = time.perf_counter()
            actions = self.policy.predict_action_chunk(batch, **(guidance or {}))
            self.last_forward_s = time.perf_counter() - started
            actions = self.postprocessor(actions)
        chunk: np.ndarray = actions[0].detach().cpu().numpy().astype(np.float32)
        return chunk

    def _observe(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Push the observation into the policy's history, as its select_action would (diffusion).

        Returns the batch in the layout the policy's predict_action_chunk reads. Plugin policies
        (rgbd_diffusion) offer `observe`; LeRobot's own keep the history in private queues.
        """
        observe = getattr(self.policy, "observe", None)
        if observe is not None:
            observe(batch)
            return batch
        return lerobot_compat.push_observation_history(self.policy, batch)
