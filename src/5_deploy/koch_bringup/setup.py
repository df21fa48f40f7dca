from glob import glob

from setuptools import find_packages, setup

PACKAGE = "koch_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*.urdf")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="Robot learning team",
    maintainer_email="robot-learning@example.com",
    description=(
        "Launch files, node graph declarations and the simulated end-to-end demo for the Koch v1.1 "
        "arm."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "demo = koch_bringup.demo:main",
            "launch_graph = koch_bringup.launcher:main",
            "record_episodes = koch_bringup.episodes:main",
            "koch_urdf = koch_bringup.urdf_model:main",
            "fault_drill = koch_bringup.fault_drill:main",
            "expert_check = koch_bringup.expert_check:main",
            "rollout = koch_bringup.rollout:main",
        ],
    },
)
