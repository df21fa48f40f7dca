"""Build the source a CameraSettings names (imports only what that source needs)."""

from __future__ import annotations

from koch_camera.settings import CameraSettings
from koch_camera.source import CameraSource, Clock


def make_source(settings: CameraSettings, clock: Clock) -> CameraSource:
    settings.validate()
    if settings.source == "sim":
        from koch_camera.sim_source import SimSceneSource, sim_camera_config

        return SimSceneSource(sim_camera_config(settings), settings.mount, settings.depth, clock)
    if settings.source == "file":
        from koch_camera.file_source import VideoFileSource

        return VideoFileSource(settings.path, settings.fps, clock, settings.loop, settings.width, settings.height,
                               settings.focal_px)
    if settings.source == "v4l2":
        if settings.depth:
            raise ValueError("source v4l2 has no depth stream; set depth:=false or use source:=realsense")
        from koch_camera.v4l2_source import V4l2Source

        return V4l2Source(settings, clock)
    from koch_camera.realsense_source import RealSenseSource

    return RealSenseSource(settings, clock)
