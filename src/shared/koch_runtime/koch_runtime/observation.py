"""Robot observation -> the tensors LeRobotDataset yields, written once for training and the robot.

`ObservationChecker` checks a numpy observation against what the checkpoint was trained on and
batches it; `arrays_to_batch` and `transform_image` turn the checked arrays into the dataset's layout
(channel-first float images in [0, 1], the training resize and crop). The PyTorch runtime runs them
eagerly, the ONNX export traces them into the deployed graph, and training's data pipeline applies the
same `transform_image`, so every path frames its images the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_IMAGES

from koch_common.feature_mapping import IMAGE_PREFIX
from koch_common.image_codec import DEPTH_UNIT_M

DEPTH_KIND = "depth"  # feature spec `kind` of a depth map (colour cameras: "rgb")

ACTION_KEY = ACTION

__all__ = [
    "ACTION_KEY",
    "IMAGE_PREFIX",
    "ObservationChecker",
    "PolicyInputError",
    "arrays_to_batch",
    "depth_map_to_metres",
    "image_output_shape",
    "transform_image",
    "with_stacked_cameras",
]


class PolicyInputError(ValueError):
    """An observation handed to the policy does not match what it was trained on."""


def depth_map_to_metres(depth: torch.Tensor) -> torch.Tensor:
    """A stored depth map as LeRobotDataset yields it (integer millimetres, (..., 1, H, W)) -> float32 metres.

    The one decoding of depth on the way into a policy: training applies it to dataset items and the
    robot's observations arrive as the same millimetres (koch_common.image_codec.depth_to_millimetres).
    LeRobot 0.4.4 reads 16-bit PNGs as int16, so values past 32.767 m come back negative: they are
    taken modulo 2**16, i.e. as the uint16 that was stored.
    """
    millimetres = depth.to(torch.int32)
    millimetres = torch.where(millimetres < 0, millimetres + 65536, millimetres)
    return millimetres.to(torch.float32) * DEPTH_UNIT_M


def depth_for_policy(depth: torch.Tensor, spec: Mapping[str, Any] | None,
                     generator: torch.Generator | None) -> torch.Tensor:
    """A depth map (integer millimetres, (..., 1, H, W)) as the policy takes it: metres, repeated to
    `spec["channels"]` channels for policies built for colour images (LeRobot's ACT and diffusion),
    then the camera's resize / crop. Training (dataset items) and the robot (live frames) both call this.
    """
    metres = depth_map_to_metres(depth)
    channels = int((spec or {}).get("channels", 1))
    if channels != 1:
        metres = metres.expand(*metres.shape[:-3], channels, *metres.shape[-2:])
    return transform_image(metres, spec, generator) if spec else metres


def is_depth_spec(spec: Mapping[str, Any] | None) -> bool:
    """A checkpoint feature spec (koch_features.json) of a depth map."""
    return spec is not None and spec.get("kind") == DEPTH_KIND


def image_output_shape(spec: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) the policy sees for an image feature spec after resize and crop."""
    height, width = (spec.get("crop") or spec.get("resize") or list(spec["shape"][:2]))
    return int(height), int(width)


def transform_image(image: torch.Tensor, spec: Mapping[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Resize then crop a float (..., C, H, W) image as configured in `spec` (resize/crop keys).

    Training passes a generator (random crop); inference passes None (centre crop), so the robot
    sees the same framing as the average training sample.
    """
    resize, crop = spec.get("resize"), spec.get("crop")
    if resize and tuple(image.shape[-2:]) != tuple(resize):
        lead = image.shape[:-3]
        flat = image.reshape(-1, *image.shape[-3:])
        flat = torch.nn.functional.interpolate(flat, size=tuple(resize), mode="bilinear", antialias=True,
                                               align_corners=False)
        image = flat.reshape(*lead, *flat.shape[-3:])
    if crop:
        height, width = image.shape[-2:]
        ch, cw = crop
        if ch > height or cw > width:
            raise ValueError(f"crop {crop} is larger than the image {(height, width)}; lower dataset.crop")
        if generator is not None:
            top = int(torch.randint(0, height - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - cw + 1, (1,), generator=generator))
        else:
            top, left = (height - ch) // 2, (width - cw) // 2
        image = image[..., top:top + ch, left:left + cw]
    return image


class ObservationChecker:
    """Checks robot observations against what the policy was trained on and batches them (one).

    Images: uint8 (1, H, W, C) as recorded (with `feature_specs`, the checkpoint's dataset specs,
    before the training resize / crop); depth maps: uint16 millimetres (1, H, W, 1) as recorded, handed
    on as int32. Everything else: finite float32 (1, *shape).
    This is the input of `arrays_to_batch` and of the exported ONNX graph alike. The expected
    layouts are worked out once, here, not on every inference.
    """

    def __init__(self, input_features: Mapping[str, Any],
                 feature_specs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.input_features = input_features
        self.feature_specs = feature_specs
        self.features = tuple(input_features)
        self._images: list[tuple[str, tuple[int, int, int], bool]] = []  # key, recorded shape, depth map
        self._vectors: list[tuple[str, tuple[int, ...]]] = []
        for key, feature in input_features.items():
            expected = tuple(feature.shape)
            if key.startswith(IMAGE_PREFIX):
                spec = (feature_specs or {}).get(key, {})
                depth = is_depth_spec(spec)
                if spec.get("resize") or spec.get("crop") or depth:
                    height, width, channels = spec["shape"]
                else:
                    channels, height, width = expected
                self._images.append((key, (height, width, channels), depth))
            else:
                self._vectors.append((key, expected))

    def __call__(self, observation: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        try:
            for key, shape, depth in self._images:
                value = np.asarray(observation[key])
                if value.ndim == 2 and shape[2] == 1:
                    value = value[:, :, None]
                if depth:
                    if value.dtype != np.uint16 or value.shape != shape:
                        raise PolicyInputError(
                            f"{key}: expected a uint16 millimetre depth map of shape {shape} (HxWx1, as recorded: "
                            f"koch_common.image_codec.depth_to_millimetres), got {value.dtype} {value.shape}")
                    arrays[key] = value.astype(np.int32)[None]
                    continue
                if value.dtype != np.uint8 or value.shape != shape:
                    raise PolicyInputError(
                        f"{key}: expected a uint8 image of shape {shape} (HxWxC, as "
                        f"recorded), got {value.dtype} {value.shape}; fix the camera resolution"
                    )
                arrays[key] = np.ascontiguousarray(value)[None]
            for key, vector_shape in self._vectors:
                value = np.asarray(observation[key])
                if value.shape != vector_shape:
                    raise PolicyInputError(f"{key}: expected shape {vector_shape}, got {value.shape}")
                batch = value.astype(np.float32)[None]  # a copy: the caller may reuse its buffer
                if not np.isfinite(batch).all():
                    raise PolicyInputError(f"{key}: contains non-finite values {value}")
                arrays[key] = batch
        except KeyError:
            missing = [key for key in self.features if key not in observation]
            raise PolicyInputError(
                f"observation lacks {missing}; the policy needs {sorted(self.features)}, "
                f"got {sorted(observation)}"
            ) from None
        return arrays

    def batch(self, observation: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Numpy robot observation -> a batch of one, in the layout LeRobotDataset produces.

        State: float32 (D,) -> (1, D). Images: uint8 HxWxC -> float32 (1, C, H, W) in [0, 1].
        With `feature_specs` images arrive at the recorded size and get the training resize / centre crop.
        """
        arrays = self(observation)
        return arrays_to_batch({k: torch.from_numpy(v) for k, v in arrays.items()}, self.input_features,
                               self.feature_specs)


def arrays_to_batch(
    arrays: Mapping[str, torch.Tensor],
    input_features: Mapping[str, Any],
    feature_specs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """`ObservationChecker`'s output as tensors -> the batch layout LeRobotDataset produces.

    Images: uint8 (B, H, W, C) -> float32 (B, C, h, w) in [0, 1] (the `/ 255` of the dataset's video
    decoder), then the training resize / centre crop; depth maps: integer millimetres -> `depth_for_policy`.
    Pure torch, so the ONNX export traces this very function into the deployed graph.
    """
    batch = {}
    for key in input_features:
        tensor = arrays[key]
        spec = (feature_specs or {}).get(key)
        if is_depth_spec(spec):
            tensor = depth_for_policy(tensor.permute(0, 3, 1, 2), spec, None)
        elif key.startswith(IMAGE_PREFIX):
            tensor = tensor.permute(0, 3, 1, 2).float() / 255.0
            if spec:
                tensor = transform_image(tensor, spec, None)
        batch[key] = tensor
    return batch


def with_stacked_cameras(batch: dict[str, Any], config: Any) -> dict[str, Any]:
    """The batch plus `observation.images`: every camera stacked, the layout LeRobot's diffusion reads.

    `config`: the policy's LeRobot config (its `image_features` give the cameras and their order).
    """
    return {**batch, OBS_IMAGES: torch.stack([batch[k] for k in config.image_features], dim=-4)}
