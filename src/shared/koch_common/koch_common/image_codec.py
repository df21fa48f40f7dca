"""numpy <-> sensor_msgs/Image conversion; cv_bridge when it is installed, this otherwise.

`to_fields`/`from_fields` work on the message's plain fields, so the same code decodes rclpy
messages (policy node), rosbags messages (converter) and builds messages for publishers.
Encodings and byte layout match cv_bridge's for `rgb8`, `bgr8`, `mono8`, `16UC1` and `32FC1`.
`to_image_msg`/`from_image_msg` build and read rclpy messages through cv_bridge where it is
importable (a ROS install) and through the fields otherwise; rclpy/cv_bridge are imported only
when they are called, so this module stays ROS-free.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

# encoding -> (dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}


class ImageEncodingError(ValueError):
    pass


@dataclass
class ImageFields:
    """The payload fields of a sensor_msgs/Image."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def _spec(encoding: str) -> tuple[np.dtype, int]:
    if encoding not in ENCODINGS:
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {sorted(ENCODINGS)}"
        )
    return ENCODINGS[encoding]


def to_fields(array: np.ndarray, encoding: str) -> ImageFields:
    dtype, channels = _spec(encoding)
    arr = np.ascontiguousarray(array, dtype=dtype)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        raise ImageEncodingError(f"array of shape {array.shape} does not fit encoding {encoding!r}")
    height, width = arr.shape[:2]
    return ImageFields(
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=int(sys.byteorder == "big"),
        step=int(width * channels * dtype.itemsize),
        data=arr.tobytes(),
    )


def from_fields(
    height: int, width: int, encoding: str, step: int, data: bytes | np.ndarray, is_bigendian: int = 0
) -> np.ndarray:
    """Decode an Image payload into an (H, W) or (H, W, C) array: a view of `data` (keeping it alive)
    when its rows are unpadded and in native byte order, otherwise a copy."""
    dtype, channels = _spec(encoding)
    # numpy arrays export the buffer protocol; numpy's type stubs do not declare it
    buf = np.frombuffer(memoryview(data), dtype=np.uint8)  # type: ignore[arg-type]
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes or buf.size < step * height:
        raise ImageEncodingError(
            f"image data too short: {buf.size} bytes for {height}x{width} {encoding} with step {step}"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if is_bigendian else "<"))
    arr = arr.astype(dtype, copy=False)
    return arr.reshape(height, width, channels) if channels > 1 else arr.reshape(height, width)


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """Colour image in RGB order whatever the source encoding (mono is replicated)."""
    if encoding == "rgb8":
        return array
    if encoding == "bgr8":
        return np.ascontiguousarray(array[:, :, ::-1])
    if encoding == "mono8":
        return np.repeat(array[:, :, None], 3, axis=2)
    raise ImageEncodingError(f"encoding {encoding!r} is not a colour image")


# depth encoding -> factor to metres (16UC1/mono16 millimetres, 32FC1 metres)
DEPTH_SCALE_TO_M = {"16UC1": 1e-3, "mono16": 1e-3, "32FC1": 1.0}


DEPTH_UNIT_M = 1e-3  # a stored depth map's unit: millimetres, as uint16 (0 = no return)
MAX_DEPTH_MM = 65535
# A depth feature's `info` in a dataset's meta/info.json: LeRobot 0.6's depth-map flags (is_depth_map, and
# depth_unit "mm" for integer maps), so the feature reads as a depth map there too.
DEPTH_MAP_INFO = {"is_depth_map": True, "depth_unit": "mm"}


def depth_to_millimetres(array: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded depth image as the dataset stores it: uint16 millimetres (H, W, 1), 0 = no return.

    16UC1/mono16 pass unchanged (lossless); 32FC1 metres are rounded to the millimetre (finer than
    any depth camera's noise) and NaN, inf, negative or beyond 65.535 m read as no return. The
    converter stores this and the policy node hands live depth over in it, so training and inference
    see the same values (koch_runtime.observation.depth_map_to_metres makes metres of both).
    """
    if encoding not in DEPTH_SCALE_TO_M:
        raise ImageEncodingError(
            f"depth image encoding {encoding!r} is not supported; use one of {sorted(DEPTH_SCALE_TO_M)}"
        )
    if array.dtype == np.uint16:
        depth = array
    else:
        mm = np.asarray(array, dtype=np.float64) * (DEPTH_SCALE_TO_M[encoding] / DEPTH_UNIT_M)
        valid = np.isfinite(mm) & (mm >= 0) & (mm <= MAX_DEPTH_MM)
        depth = np.where(valid, np.round(np.where(valid, mm, 0.0)), 0.0).astype(np.uint16)
    return depth.reshape(*depth.shape[:2], 1)


def _cv_bridge():
    """A CvBridge when cv_bridge is importable (ROS installs from apt), else None."""
    global _BRIDGE
    if _BRIDGE is False:
        try:
            from cv_bridge import CvBridge

            _BRIDGE = CvBridge()
        except ImportError:
            _BRIDGE = None
    return _BRIDGE


_BRIDGE: object = False


def to_image_msg(array: np.ndarray, encoding: str):
    """A sensor_msgs/Image (rclpy) holding `array`; header left for the caller to stamp."""
    _spec(encoding)
    bridge = _cv_bridge()
    if bridge is not None:
        return bridge.cv2_to_imgmsg(np.ascontiguousarray(array), encoding=encoding)
    from sensor_msgs.msg import Image

    f = to_fields(array, encoding)
    return Image(height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian,
                 step=f.step, data=f.data)


def from_image_msg(msg) -> np.ndarray:
    """The array in a sensor_msgs/Image (rclpy), same result with or without cv_bridge."""
    _spec(msg.encoding)
    bridge = _cv_bridge()
    if bridge is not None:
        return np.array(bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
    return from_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
