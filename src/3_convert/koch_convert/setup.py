
from setuptools import find_packages, setup

PACKAGE = "koch_convert"

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
    description="Converts rosbag2 episodes into LeRobot v3.0 datasets on an exact time grid.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "bag_to_lerobot = koch_convert.cli:main",
            "lerobot_migrate_v21 = koch_convert.migrate:main",
        ],
    },
)
