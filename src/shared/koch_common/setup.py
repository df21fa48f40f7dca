from glob import glob

from setuptools import find_packages, setup

PACKAGE = "koch_common"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # The project's config/ (a symlink here) ships with the package for non-symlink installs.
        *[(f"share/{PACKAGE}/{folder}", glob(f"{folder}/*.yaml"))
          for folder in ("config", "config/mapping", "config/train", "config/cameras")],
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="Robot learning team",
    maintainer_email="robot-learning@example.com",
    description=(
        "Shared ROS-free core: Koch robot model, config loading, resampler, safety limits, image "
        "codec. No torch, LeRobot or onnxruntime: the policy runtime is koch_runtime."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [

        ],
    },
)
