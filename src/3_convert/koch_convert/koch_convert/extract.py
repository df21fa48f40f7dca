"""Message -> feature value, for every message type the mapping accepts (ROS-free).

Joint vectors are taken by joint *name* (publishers may order joints differently), or by index from
messages without names where the mapping allows it (`Feature.joint_indices`); colour
images become uint8 RGB (H, W, 3); depth becomes uint16 millimetres (H, W, 1), through the
same `depth_to_millimetres` the policy node decodes live depth with.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from koch_common.feature_mapping import JOINT_TRAJECTORY, Feature, JointLookupError
from koch_common.image_codec import DEPTH_SCALE_TO_M, depth_to_millimetres, from_fields, to_rgb
from koch_convert.bag_reader import loaded

# CompressedImage.format ("jpeg", "png", "rgb8; jpeg compressed bgr8") -> FFmpeg decoder name
COMPRESSED_CODECS = {"jpeg": "mjpeg", "jpg": "mjpeg", "png": "png"}


class ExtractError(ValueError):
    pass


class JointVector:
    """JointState.position or JointTrajectory.points[0].positions in the mapping's joint order."""

    def __init__(self, feature: Feature, where: str) -> None:
        self.feature = feature
        self.where = where
        self.trajectory = feature.msgtype == JOINT_TRAJECTORY
        self._index_cache: dict[tuple[tuple[str, ...], int], np.ndarray] = {}

    def __call__(self, msg: Any) -> np.ndarray:
        if self.trajectory:
            names = tuple(msg.joint_names)
            if not msg.points:
                raise ExtractError(f"{self.where}: a JointTrajectory without points cannot give {self.feature.key}")
            # The first point is the command the arm is sent towards now; later points are plans.
            values = np.asarray(msg.points[0].positions, dtype=np.float64)
        else:
            names = tuple(msg.name)
            values = np.asarray(msg.position, dtype=np.float64)
        key = (names, values.shape[0])
        index = self._index_cache.get(key)
        if index is None:
            try:
                index = np.array(self.feature.joint_indices(names, values.shape[0]), dtype=np.intp)
            except JointLookupError as err:
                raise ExtractError(f"{self.where}: {err}") from None
            self._index_cache[key] = index
        return values[index].astype(np.float32)


def _decode_compressed(msg: Any) -> np.ndarray:
    fmt = str(msg.format).lower()
    codec = next((c for name, c in COMPRESSED_CODECS.items() if name in fmt.split(";")[-1]), None)
    if codec is None:
        raise ExtractError(f"CompressedImage format {msg.format!r} is not supported; use jpeg or png")
    decoder = av.CodecContext.create(codec, "r")
    assert isinstance(decoder, av.VideoCodecContext)
    frames = decoder.decode(av.Packet(bytes(msg.data)))
    if not frames:
        raise ExtractError(f"CompressedImage ({msg.format}) did not decode to a frame")
    # "bgr8; jpeg compressed bgr8" images were compressed from BGR by image_transport: the codec
    # itself stores colour correctly, so rgb24 out of the decoder is right in both cases.
    return frames[0].to_ndarray(format="rgb24")


def decode_color(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8/bgr8/mono8) or CompressedImage (jpeg/png) -> uint8 RGB (H, W, 3)."""
    msg = loaded(msg)
    if hasattr(msg, "format"):
        return _decode_compressed(msg)
    array = from_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
    return to_rgb(array, msg.encoding)


def decode_depth(msg: Any) -> np.ndarray:
    """16UC1 (mm) / 32FC1 (m) Image -> uint16 millimetres (H, W, 1), 0 = no return; live decodes the same."""
    msg = loaded(msg)
    if msg.encoding not in DEPTH_SCALE_TO_M:
        raise ExtractError(
            f"depth image encoding {msg.encoding!r} is not supported; use one of {sorted(DEPTH_SCALE_TO_M)}"
        )
    array = from_fields(msg.height, msg.width, msg.encoding, msg.step, msg.data, msg.is_bigendian)
    return depth_to_millimetres(array, msg.encoding)


def decoder_for(feature: Feature) -> Any:
    """Decoder applied lazily to the message a frame holds (images), or None for joint vectors."""
    if feature.is_depth:
        return decode_depth
    if feature.is_color:
        return decode_color
    return None
