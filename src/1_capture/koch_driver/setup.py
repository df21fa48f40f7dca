
from setuptools import find_packages, setup

PACKAGE = "koch_driver"

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
    description="Dynamixel Protocol 2.0 joint driver and teleoperation for Koch arms.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "driver = koch_driver.driver_node:main",
            "teleop = koch_driver.teleop_node:main",
            "calibrate = koch_driver.calibrate:main",
        ],
    },
)
