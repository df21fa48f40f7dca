# GPU training / inference image: CUDA runtime, torch (LeRobot's CUDA wheels), onnxruntime-gpu,
# the workspace built with colcon (ROS 2 Python wheels from PyPI: no ROS install needed).
#   docker build -f docker/train.Dockerfile -t koch-train .
#   docker compose -f docker/compose.yaml run train train --config train/act_sim.yaml ...
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Ubuntu 24.04's Python 3.12 runs lerobot 0.4 and the ROS 2 PyPI wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg python3 python3-venv python3-pip git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /ws
COPY requirements.txt requirements-ros.txt constraints.txt colcon.meta ./
COPY config ./config
COPY launch ./launch
COPY scripts ./scripts
COPY src ./src
# setup.sh: venv, requirements (torch comes with LeRobot: PyPI's Linux wheels bundle CUDA 12),
# the ROS 2 wheels (no rclpy here) and the colcon build. Then the CUDA build of onnxruntime.
RUN bash scripts/setup.sh \
    && .venv/bin/pip uninstall -y onnxruntime \
    && .venv/bin/pip install --no-cache-dir onnxruntime-gpu==1.20.1

ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY docker/entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["bash"]
