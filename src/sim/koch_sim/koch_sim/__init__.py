"""The simulated Koch: MuJoCo physics behind a Dynamixel Protocol 2.0 emulator, rendered cameras, tasks."""

import os

# MuJoCo picks its GL backend when first imported: headless EGL (Mesa's software rasteriser where
# there is no GPU) unless the user chose another (osmesa, glfw).
os.environ.setdefault("MUJOCO_GL", "egl")
