
from setuptools import find_packages, setup

PACKAGE = "koch_sim"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="Robot learning team",
    maintainer_email="robot-learning@example.com",
    description=(
        "Simulated Koch v1.1: Dynamixel Protocol 2.0 servo emulator on a pseudo-terminal, rendered "
        "scene, reach task and scripted expert."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_world = koch_sim.sim_world_node:main",
            "scripted_leader = koch_sim.scripted_leader_node:main",
            "dxl_emulator = koch_sim.dxl_emulator:main"
        ],
    },
)
