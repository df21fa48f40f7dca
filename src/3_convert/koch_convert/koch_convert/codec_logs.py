"""How much ffmpeg (libx264, the mp4 muxer) prints while the converter encodes and joins videos.

LeRobot encodes and joins videos with PyAV, which calls into ffmpeg in this process. ffmpeg's
encoders and muxers log at INFO: x264's statistics after every video, "Auto-inserting
h264_mp4toannexb" and "Starting second pass" whenever videos are joined. Two switches decide
what reaches the terminal, and both are set here: PyAV's log callback (`av.logging.set_level`,
which forwards to Python's logging) and ffmpeg's own level (`av.logging.set_libav_level`),
which ffmpeg's default callback obeys; LeRobot's encoder threads and video joining put that
default callback back when they finish, so PyAV's level alone would hold only until then.
"""

from __future__ import annotations

import av


def set_codec_logs(verbose: bool) -> None:
    """Quiet (errors only) unless `verbose`, then everything ffmpeg prints by default (INFO).

    Process-wide: call it in each process that encodes (the converter's worker processes too)."""
    if verbose:
        av.logging.set_libav_level(av.logging.INFO)
        av.logging.restore_default_callback()  # PyAV's callback would pass INFO on to a WARNING logger
    else:
        av.logging.set_libav_level(av.logging.ERROR)
        av.logging.set_level(av.logging.ERROR)  # errors still reach PyAV, which puts them in its exceptions
