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
    safetensors          0.8.0
    tokenizers           0.23.3
    tensorboardX         2.6.5
    matplotlib           3.11.2
    torch (hf extra)     2.13.0+cpu
    transformers (hf)    5.23.0
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
        "scipy>=1.11,<2",
        "absl-py>=2,<3",
        "safetensors>=0.4,<1",
        "tokenizers>=0.19,<1",
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-xdist>=3.5"],
        "notebooks": [],
        "bench": [],
        # torch is pinned to the CPU build that this machine keeps on disk; a
        # range would let pip pull a multi-GB CUDA build.
        "hf": ["torch==2.13.0", "transformers>=4.45,<6"],
    },
)
