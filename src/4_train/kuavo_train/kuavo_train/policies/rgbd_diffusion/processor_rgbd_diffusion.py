"""Pre/post-processors of `rgbd_diffusion`: exactly LeRobot's diffusion pipelines (normalise, device)."""

from __future__ import annotations

from typing import Any

from lerobot.policies.diffusion.processor_diffusion import make_diffusion_pre_post_processors

from kuavo_train.policies.rgbd_diffusion.configuration_rgbd_diffusion import RgbdDiffusionConfig


def make_rgbd_diffusion_pre_post_processors(
    config: RgbdDiffusionConfig, dataset_stats: dict[str, dict[str, Any]] | None = None
) -> tuple[Any, Any]:
    return make_diffusion_pre_post_processors(config, dataset_stats=dataset_stats)
