# Robot computer image: ROS 2 Jazzy with the workspace built by colcon.
#   docker build -f docker/robot.Dockerfile -t koch-robot .
# (RViz runs on a desktop with ROS 2; this image is headless.)
FROM ros:jazzy-ros-base

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg python3-venv python3-pip \
       ros-jazzy-robot-state-publisher ros-jazzy-rosbag2-storage-mcap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /ws
COPY requirements.txt requirements-ros.txt constraints.txt colcon.meta ./
COPY config ./config
COPY launch ./launch
COPY scripts ./scripts
COPY src ./src
# setup.sh sees rclpy from the sourced Jazzy install, so it skips the PyPI ROS wheels.
RUN source /opt/ros/jazzy/setup.bash && bash scripts/setup.sh

COPY docker/entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["bash"]
