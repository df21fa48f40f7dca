
from setuptools import find_packages, setup

PACKAGE = "koch_record"

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
        "Records live topics into rosbag2 (MCAP or sqlite3) episodes, byte-for-byte what ros2 bag "
        "record stores."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "recorder = koch_record.recorder_node:main"
        ],
    },
)
