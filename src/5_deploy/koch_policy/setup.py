
from setuptools import find_packages, setup

PACKAGE = "koch_policy"

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
        "Policy inference node: action chunks as JointTrajectory at 30 Hz through the shared safety"
        " layer."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy = koch_policy.policy_node:main"
        ],
    },
)
