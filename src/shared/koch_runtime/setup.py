from setuptools import find_packages, setup

PACKAGE = "koch_runtime"

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
        "The policy runtime training and the robot share: LeRobot checkpoints on PyTorch or onnxruntime, "
        "plugins, and the one module that touches LeRobot internals."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [],
    },
)
