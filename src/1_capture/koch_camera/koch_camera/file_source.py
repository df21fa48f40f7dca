"""A video file replayed as a camera (PyAV): recordings and dataset videos become live streams.

Frames are decoded ahead and released at the camera's fps; a frame's stamp is the moment it is
released (its "exposure" as a live camera), so the stamps are those of a camera running now.
The file is checked at every frame: a file that is removed or replaced makes the camera
disappear (the node reports it and re-opens the file when it is back).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from koch_camera.settings import Intrinsics, pinhole
from koch_camera.source import Clock, DeviceMissingError, Frame, Pacer, SourceError


class VideoFileSource:
    def __init__(self, path: str, fps: float, clock: Clock, loop: bool = True, width: int = 0, height: int = 0,
                 focal_px: float = 0.0) -> None:
        self.path = Path(path).expanduser()
        self.description = f"file {self.path}"
        self.fps, self.clock, self.loop = fps, clock, loop
        self.width, self.height, self.focal_px = width, height, focal_px
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._pacer = Pacer(fps)
        self._inode: tuple[int, int] | None = None
        self._native: tuple[int, int] | None = None

    def open(self) -> None:
        if not self.path.is_file():
            raise DeviceMissingError(f"video file {self.path} not found; give path:=<an existing video file>")
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as err:
            self.close()
            raise SourceError(f"video file {self.path} cannot be decoded as video ({err}); "
                              "give a file ffmpeg can read (mp4, mkv, avi...)") from None
        # Slice threads only, not frame threads: a frame-threaded decoder is freed (on close, with the
        # GIL held) while its threads may be logging, and once any library installs PyAV's Python log
        # callback (torchvision does at import) that deadlocks. Slice threads are idle between calls.
        stream.thread_type = "SLICE"
        self._native = (stream.codec_context.width, stream.codec_context.height)
        self._frames = self._container.decode(stream)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._pacer = Pacer(self.fps)

    def _decode(self) -> np.ndarray:
        assert self._frames is not None and self._container is not None
        try:
            frame = next(self._frames)
        except StopIteration:
            if not self.loop:
                raise SourceError(f"video file {self.path} ended (loop:=false)") from None
            self._container.seek(0)
            self._frames = self._container.decode(self._container.streams.video[0])
            try:
                frame = next(self._frames)
            except StopIteration:
                raise SourceError(f"video file {self.path} has no frames") from None
        except av.FFmpegError as err:
            raise SourceError(f"video file {self.path} cannot be read any more: {err}") from None
        rgb: np.ndarray = frame.to_ndarray(format="rgb24")
        if self.width and (rgb.shape[1], rgb.shape[0]) != (self.width, self.height):
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return rgb

    def read(self) -> Frame:
        if self._frames is None:
            raise SourceError(f"video file {self.path} is not open")
        try:
            st = os.stat(self.path)
        except OSError:
            raise DeviceMissingError(f"video file {self.path} disappeared") from None
        if (st.st_dev, st.st_ino) != self._inode:
            raise SourceError(f"video file {self.path} was replaced; re-opening it")
        rgb = self._decode()
        sequence = self._pacer.wait()
        return Frame(rgb, "rgb8", self.clock(), sequence)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames = None, None

    def intrinsics(self) -> Intrinsics:
        width, height = (self.width, self.height) if self.width else (self._native or (0, 0))
        # a replayed recording has no calibration of its own: a 60 degree horizontal field of view
        return pinhole(width, height, self.focal_px or width / (2 * np.tan(np.radians(30))))


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 30.0, codec: str = "libx264") -> Path:
    """Encode RGB frames (H, W, 3) into a video file the file source can replay (PyAV)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=round(fps))
        assert isinstance(stream, av.VideoStream)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode())
    return path
