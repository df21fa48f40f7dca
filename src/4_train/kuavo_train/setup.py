
from setuptools import find_packages, setup

PACKAGE = "kuavo_train"

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
        "Offline policy training on LeRobot datasets with the same policy code as the robot."
    ),
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "train = kuavo_train.train:main",
            "kuavo_eval = kuavo_train.evaluate:main",
            "kuavo_export = kuavo_train.export:main",
        ],
        # Policy types this package adds to LeRobot: koch_runtime imports these modules before it builds
        # or loads a policy (koch_runtime.plugins).
        "koch_runtime.policies": [
            "rgbd_diffusion = kuavo_train.policies",
        ],
    },
)
