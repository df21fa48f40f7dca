"""Config of the RGB+Depth diffusion policy (LeRobot type `rgbd_diffusion`).

Extends LeRobot's DiffusionConfig (noise scheduler, horizon, n_obs_steps, UNet sizes, normalisation)
with the multi-camera RGB+Depth observation encoder and a choice of denoiser. The file and class
names follow LeRobot's plugin convention (configuration_X / modeling_X / processor_X), so
`get_policy_class`, `make_pre_post_processors` and `from_pretrained` find the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

DENOISERS = ("unet", "transformer")


@PreTrainedConfig.register_subclass("rgbd_diffusion")
@dataclass
class RgbdDiffusionConfig(DiffusionConfig):
    # Depth maps come as they are recorded, one channel in metres (koch_runtime.build reads this; policies
    # built for colour images get depth repeated to three channels).
    takes_depth_maps: ClassVar[bool] = True
    # Image features holding depth maps; null = every image key containing "depth" (<camera>_depth).
    depth_features: list[str] | None = None
    # Token width of the observation encoder (and of the transformer denoiser).
    d_model: int = 128
    n_heads: int = 4
    # Attention layers across cameras (per modality), then one cross-modal RGB<->depth block.
    n_camera_attention_layers: int = 1
    # 'unet' (LeRobot's conditional 1-D UNet, FiLM on the flattened history tokens) or 'transformer'
    # (action tokens cross-attending to the observation history tokens).
    denoiser: str = "unet"
    n_denoiser_layers: int = 2
    attention_dropout: float = 0.1
    # Cropping is done by the data pipeline (dataset.crop) and the robot runtime, not inside the model.
    crop_shape: tuple[int, int] | None = None
    horizon: int = 16
    n_action_steps: int = 8
    n_obs_steps: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.denoiser not in DENOISERS:
            raise ValueError(f"denoiser must be one of {list(DENOISERS)}, got {self.denoiser!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")

    @property
    def depth_keys(self) -> list[str]:
        images = list(self.image_features)
        keys = self.depth_features if self.depth_features is not None else [k for k in images if "depth" in k]
        return [k for k in images if k in keys]

    @property
    def rgb_keys(self) -> list[str]:
        return [k for k in self.image_features if k not in self.depth_keys]

    def validate_features(self) -> None:
        if not self.image_features:
            raise ValueError("rgbd_diffusion needs at least one camera image in policy.input_features")
        if self.robot_state_feature is None:
            raise ValueError("rgbd_diffusion needs observation.state in policy.input_features")
        unknown = sorted(set(self.depth_features or []) - set(self.image_features))
        if unknown:
            raise ValueError(f"depth_features {unknown} are not image inputs; images: {sorted(self.image_features)}")
        for group in (self.rgb_keys, self.depth_keys):
            shapes = {tuple(self.image_features[k].shape) for k in group}
            if len(shapes) > 1:
                raise ValueError(f"cameras of one modality must share a shape (set dataset.resize): {shapes}")
