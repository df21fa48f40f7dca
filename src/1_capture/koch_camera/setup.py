
from setuptools import find_packages, setup

PACKAGE = "koch_camera"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    # av (PyAV) and opencv come with lerobot (requirements.txt); pyrealsense2 is optional (source realsense)
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="Robot learning team",
    maintainer_email="robot-learning@example.com",
    description=(
        "Camera capture nodes (sim renderer, video file, V4L2, RealSense) publishing sensor_msgs/Image "
        "and CameraInfo with capture timestamps."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "camera = koch_camera.camera_node:main"
        ],
    },
)
