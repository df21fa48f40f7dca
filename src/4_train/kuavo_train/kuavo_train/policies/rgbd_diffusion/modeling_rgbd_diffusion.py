"""RGB+Depth diffusion policy: per-modality ResNet18 + spatial-softmax keypoints, attention across
cameras, cross-modal RGB<->depth attention, and a UNet or Transformer denoiser conditioned on the
n_obs_steps observation history.

Reuses LeRobot's diffusion pieces: DiffusionModel's noise scheduler, training loss and sampling
loop, the conditional 1-D UNet, SpatialSoftmax, the GroupNorm swap and the timestep embedding;
only the observation encoder and the transformer denoiser are new.
"""

from __future__ import annotations

from collections import deque
from typing import cast

import torch
import torchvision
from lerobot.policies.diffusion.modeling_diffusion import (
    DiffusionConditionalUnet1d,
    DiffusionPolicy,
    DiffusionSinusoidalPosEmb,
    SpatialSoftmax,
)
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.utils import populate_queues
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE
from torch import Tensor, nn

from koch_runtime.lerobot_compat import EncoderDiffusionModel, make_noise_scheduler, replace_submodules
from kuavo_train.policies.rgbd_diffusion.configuration_rgbd_diffusion import RgbdDiffusionConfig


def group_norm_for(batch_norm: nn.Module) -> nn.Module:
    """The GroupNorm (16 channels a group) that replaces a BatchNorm2d in the vision backbone."""
    channels = cast(nn.BatchNorm2d, batch_norm).num_features
    return nn.GroupNorm(num_groups=channels // 16, num_channels=channels)


class KeypointEncoder(nn.Module):
    """ResNet18 trunk (GroupNorm) -> spatial-softmax keypoints -> one d_model token per image."""

    def __init__(self, config: RgbdDiffusionConfig, shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = shape
        backbone = getattr(torchvision.models, config.vision_backbone)(weights=None)
        if channels != 3:
            backbone.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if config.use_group_norm:
            backbone = replace_submodules(backbone, lambda m: isinstance(m, nn.BatchNorm2d), group_norm_for)
        self.trunk = nn.Sequential(*list(backbone.children())[:-2])
        with torch.no_grad():
            feature_shape = self.trunk(torch.zeros(1, channels, height, width)).shape[1:]
        self.keypoints = SpatialSoftmax(feature_shape, num_kp=config.spatial_softmax_num_keypoints)
        self.out = nn.Sequential(nn.Linear(config.spatial_softmax_num_keypoints * 2, config.d_model), nn.ReLU(),
                                 nn.Linear(config.d_model, config.d_model))

    def forward(self, images: Tensor) -> Tensor:
        return self.out(torch.flatten(self.keypoints(self.trunk(images)), start_dim=1))


class CrossAttention(nn.Module):
    """Pre-norm residual multi-head attention: `queries` attend to `context`.

    Written out with plain ops rather than nn.MultiheadAttention, whose inference fast path the
    TorchScript ONNX exporter traces into a graph that disagrees with PyTorch.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm_q, self.norm_kv = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.q, self.kv = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, context: Tensor) -> Tensor:
        b, n, d = queries.shape
        heads, head_dim = self.n_heads, d // self.n_heads
        q = self.q(self.norm_q(queries)).reshape(b, n, heads, head_dim).transpose(1, 2)
        k, v = self.kv(self.norm_kv(context)).reshape(b, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        weights = self.dropout(torch.softmax(q @ k.transpose(-2, -1) * head_dim**-0.5, dim=-1))
        return queries + self.out((weights @ v).transpose(1, 2).reshape(b, n, d))


class RgbdObservationEncoder(nn.Module):
    """(B, S, ...) per-camera images + state -> (B, S * n_tokens * d_model) conditioning."""

    def __init__(self, config: RgbdDiffusionConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.groups = [keys for keys in (config.rgb_keys, config.depth_keys) if keys]
        # One encoder per modality, or per camera with use_separate_rgb_encoder_per_camera.
        self.encoders = nn.ModuleDict()
        for keys in self.groups:
            names = keys if config.use_separate_rgb_encoder_per_camera else keys[:1]
            for key in names:
                self.encoders[self._name(key)] = KeypointEncoder(config, tuple(config.image_features[key].shape))
        n_cameras = len(config.image_features)
        self.camera_embedding = nn.Parameter(torch.zeros(n_cameras, d))
        self.camera_attention = nn.ModuleList(
            nn.ModuleList(CrossAttention(d, config.n_heads, config.attention_dropout)
                          for _ in range(config.n_camera_attention_layers))
            for _ in self.groups
        )
        self.rgb_from_depth = CrossAttention(d, config.n_heads, config.attention_dropout)
        self.depth_from_rgb = CrossAttention(d, config.n_heads, config.attention_dropout)
        self.state = nn.Linear(config.robot_state_feature.shape[0], d)
        self.n_tokens = 1 + n_cameras

    @staticmethod
    def _name(key: str) -> str:
        return key.replace(".", "_")

    def _encoder_for(self, keys: list[str], key: str) -> KeypointEncoder:
        name = self._name(key) if self.config.use_separate_rgb_encoder_per_camera else self._name(keys[0])
        return cast(KeypointEncoder, self.encoders[name])

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        state = batch[OBS_STATE]
        batch_size, steps = state.shape[:2]
        camera_index = 0
        group_tokens: list[Tensor] = []
        for g, keys in enumerate(self.groups):
            tokens: list[Tensor] = []
            for key in keys:
                images = batch[key].flatten(0, 1)  # (B*S, C, H, W)
                tokens.append(self._encoder_for(keys, key)(images) + self.camera_embedding[camera_index])
                camera_index += 1
            x = torch.stack(tokens, dim=1)  # (B*S, cameras, d)
            for layer in cast(nn.ModuleList, self.camera_attention[g]):
                x = layer(x, x)  # attention across this modality's cameras
            group_tokens.append(x)
        if len(group_tokens) == 2:  # cross-modal attention RGB <-> depth
            rgb, depth = group_tokens
            group_tokens = [self.rgb_from_depth(rgb, depth), self.depth_from_rgb(depth, rgb)]
        all_tokens = torch.cat([self.state(state.flatten(0, 1)).unsqueeze(1), *group_tokens], dim=1)
        return all_tokens.reshape(batch_size, steps * self.n_tokens * self.config.d_model)


class TransformerDenoiser(nn.Module):
    """Action tokens (+ timestep) cross-attending to the observation-history tokens."""

    def __init__(self, config: RgbdDiffusionConfig, n_cond_tokens: int) -> None:
        super().__init__()
        d, action_dim = config.d_model, config.action_feature.shape[0]
        self.d_model = d
        self.input = nn.Linear(action_dim, d)
        self.position = nn.Parameter(torch.randn(1, config.horizon, d) * 0.02)
        self.cond_position = nn.Parameter(torch.randn(1, n_cond_tokens + 1, d) * 0.02)
        self.time = nn.Sequential(DiffusionSinusoidalPosEmb(d), nn.Linear(d, 4 * d), nn.Mish(), nn.Linear(4 * d, d))
        self.self_attention = nn.ModuleList(CrossAttention(d, config.n_heads, config.attention_dropout)
                                            for _ in range(config.n_denoiser_layers))
        self.cross_attention = nn.ModuleList(CrossAttention(d, config.n_heads, config.attention_dropout)
                                             for _ in range(config.n_denoiser_layers))
        self.feedforward = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            for _ in range(config.n_denoiser_layers)
        )
        self.output = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, action_dim))

    def forward(self, x: Tensor, timestep: Tensor | int, global_cond: Tensor) -> Tensor:
        batch_size = x.shape[0]
        if not torch.is_tensor(timestep):
            timestep = torch.full((batch_size,), timestep, device=x.device, dtype=torch.long)
        memory = torch.cat([self.time(timestep).unsqueeze(1), global_cond.reshape(batch_size, -1, self.d_model)],
                           dim=1) + self.cond_position
        h = self.input(x) + self.position
        for attend_self, attend_obs, feedforward in zip(self.self_attention, self.cross_attention, self.feedforward,
                                                        strict=True):
            h = attend_obs(attend_self(h, h), memory)
            h = h + feedforward(h)
        return self.output(h)


class RgbdDiffusionModel(EncoderDiffusionModel):
    """LeRobot's DiffusionModel (scheduler, loss, sampling) with the RGB+Depth encoder and denoiser."""

    def __init__(self, config: RgbdDiffusionConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.encoder = RgbdObservationEncoder(config)
        n_cond_tokens = config.n_obs_steps * self.encoder.n_tokens
        if config.denoiser == "unet":
            self.unet = DiffusionConditionalUnet1d(config, global_cond_dim=n_cond_tokens * config.d_model)
        else:
            self.unet = TransformerDenoiser(config, n_cond_tokens)
        self.noise_scheduler = make_noise_scheduler(config)
        self.num_inference_steps = config.num_inference_steps or config.num_train_timesteps

    def encode_observations(self, batch: dict[str, Tensor]) -> Tensor:
        return self.encoder(batch)


class RgbdDiffusionPolicy(DiffusionPolicy):
    config_class = RgbdDiffusionConfig
    name = "rgbd_diffusion"

    def __init__(self, config: RgbdDiffusionConfig, **kwargs: object) -> None:
        PreTrainedPolicy.__init__(self, config)
        config.validate_features()
        self.config = config
        self._history: dict[str, deque[Tensor]] = {}
        self.diffusion = RgbdDiffusionModel(config)
        self.reset()

    def reset(self) -> None:
        """Observation history per feature (cameras kept apart: RGB and depth differ in channels)."""
        self._history = {key: deque(maxlen=self.config.n_obs_steps) for key in [OBS_STATE, *self.config.image_features]}
        self._history[ACTION] = deque(maxlen=self.config.n_action_steps)

    def observe(self, batch: dict[str, Tensor]) -> None:
        """Push one observation (B, ...) into the history (the first one fills it)."""
        self._history = populate_queues(self._history, {k: v for k, v in batch.items() if k != ACTION})

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        history = {k: torch.stack(list(q), dim=1) for k, q in self._history.items() if k != ACTION}
        return self.diffusion.generate_actions(history, noise=noise)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        self.observe(batch)
        if len(self._history[ACTION]) == 0:
            self._history[ACTION].extend(self.predict_action_chunk(batch, noise=noise).transpose(0, 1))
        return self._history[ACTION].popleft()

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, None]:
        batch = dict(batch)
        for key in self.config.image_features:
            if batch[key].ndim == 4:  # n_obs_steps == 1: add the history dim
                batch[key] = batch[key].unsqueeze(1)
        # LeRobot's compute_loss only checks that some image input is present; ours stay per camera.
        batch[OBS_IMAGES] = batch[next(iter(self.config.image_features))]
        return self.diffusion.compute_loss(batch), None
