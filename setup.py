"""Packaging for divrl.

Dependencies are declared as ranges, not pins. Versions this project has been
tested with (for reproducibility):

    jax                  0.10.2
    flax                 0.12.8
    optax                0.2.8
    orbax-checkpoint     0.12.8
    chex                 0.1.92
    tensorflow-datasets  4.9.10
    array-record         0.8.6
    ml-collections       1.1.0
    numpy                2.4.6
    absl-py              2.5.1
"""

from setuptools import find_packages, setup

setup(
    name="divrl",
    version="0.1.0",
    packages=find_packages(include=["divrl", "divrl.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.11,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "chex>=0.1.90,<0.2",
        "tensorflow-datasets>=4.9.8,<5",
        "array-record>=0.8,<1",
        "ml-collections>=1.0,<2",
        "numpy>=1.26,<3",
        "absl-py>=2,<3",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-xdist>=3.5"],
        "notebooks": [],
        "bench": [],
        "hf": [],
    },
)
