"""Policy types kuavo_train adds to LeRobot's registry (importing this registers them)."""

from kuavo_train.policies.rgbd_diffusion.configuration_rgbd_diffusion import RgbdDiffusionConfig

__all__ = ["RgbdDiffusionConfig"]
