"""Image augmentation for training: a random subset of photometric / occlusion transforms per sample.

Built on torchvision.transforms.v2. Randomness comes from an explicit per-sample seed (derived
from the run seed, epoch and position in the epoch) so a resumed run augments every sample
exactly as the uninterrupted run would, whatever the number of DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from koch_common.config import ConfigError

if TYPE_CHECKING:
    import torch

KNOWN_TRANSFORMS = ("brightness", "contrast", "saturation", "hue", "sharpness", "random_mask", "gaussian_noise")


@dataclass
class AugmentConfig:
    enable: bool = False
    # At most this many transforms (drawn without replacement, in random order) per sample.
    max_num_transforms: int = 3
    # Per transform: its strength. brightness/contrast/saturation: (min, max) factor; hue: (min, max)
    # shift in [-0.5, 0.5]; sharpness: (min, max) factor; random_mask: (min, max) fraction of the
    # image area erased; gaussian_noise: (min, max) standard deviation in [0, 1] pixel units.
    transforms: dict[str, list[float]] = field(default_factory=lambda: {
        "brightness": [0.8, 1.2],
        "contrast": [0.8, 1.2],
        "saturation": [0.5, 1.5],
        "hue": [-0.05, 0.05],
        "sharpness": [0.5, 1.5],
        "random_mask": [0.02, 0.1],
        "gaussian_noise": [0.0, 0.03],
    })
    # Apply to these image features only; null = every RGB camera (depth is never colour-jittered).
    image_keys: list[str] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.transforms) - set(KNOWN_TRANSFORMS))
        if unknown:
            raise ConfigError(f"augment.transforms: unknown transform(s) {unknown}; valid: {list(KNOWN_TRANSFORMS)}")
        for name, bounds in self.transforms.items():
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ConfigError(f"augment.transforms.{name} must be [min, max] with min <= max, got {bounds}")
        if self.max_num_transforms < 0:
            raise ConfigError(f"augment.max_num_transforms must be >= 0, got {self.max_num_transforms}")


class ImageAugmenter:
    """Applies up to `max_num_transforms` of the configured transforms to a (C, H, W) float image."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.names = list(cfg.transforms)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch
        import torchvision.transforms.v2.functional as F

        if not self.names or self.cfg.max_num_transforms == 0:
            return image
        count = int(torch.randint(1, min(self.cfg.max_num_transforms, len(self.names)) + 1, (1,), generator=generator))
        order = torch.randperm(len(self.names), generator=generator)[:count].tolist()
        out = image
        for index in order:
            name = self.names[index]
            low, high = self.cfg.transforms[name]
            value = low + (high - low) * float(torch.rand((), generator=generator))
            if name == "brightness":
                out = F.adjust_brightness(out, value)
            elif name == "contrast":
                out = F.adjust_contrast(out, value)
            elif name == "saturation":
                out = F.adjust_saturation(out, value)
            elif name == "hue":
                out = F.adjust_hue(out, value)
            elif name == "sharpness":
                out = F.adjust_sharpness(out, value)
            elif name == "random_mask":
                out = _random_mask(out, value, generator)
            elif name == "gaussian_noise":
                noise = torch.randn(out.shape, generator=generator, dtype=out.dtype) * value
                out = out + noise
        return out.clamp(0.0, 1.0)


def _random_mask(image: torch.Tensor, area: float, generator: torch.Generator) -> torch.Tensor:
    """Erase (zero) one rectangle covering `area` of the image at a random place."""
    import torch

    height, width = image.shape[-2:]
    aspect = float(torch.empty(()).uniform_(0.5, 2.0, generator=generator))
    h = max(1, min(height, round((area * height * width * aspect) ** 0.5)))
    w = max(1, min(width, round((area * height * width / aspect) ** 0.5)))
    top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
    out = image.clone()
    out[..., top:top + h, left:left + w] = 0.0
    return out
