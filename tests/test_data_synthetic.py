"""Synthetic digits: deterministic, MNIST-shaped, and learnable."""

from __future__ import annotations

import numpy as np
import pytest

from stn_deploy.data import MnistArrays, synthetic_digits, synthetic_mnist
from stn_deploy.errors import StnDeployError


def test_shapes_types_and_balance():
    images, labels = synthetic_digits(103, seed=0)
    assert images.shape == (103, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (103,) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=10)
    assert counts.min() == 10 and counts.max() == 11
    assert images.max() > 200  # ink reaches near-white
    border = np.concatenate([images[:, :2], images[:, -2:]], axis=1).max(axis=(1, 2))
    assert (border == 0).mean() > 0.95  # empty margins like MNIST
    assert images[:, 13:15, 12:16].mean() > 20  # and ink in the middle
    assert len(np.unique(images)) > 50  # anti-aliased, not binary
    assert synthetic_digits(0)[0].shape == (0, 28, 28)
    big, _ = synthetic_digits(5, seed=0, size=56)
    assert big.shape == (5, 56, 56)


def test_deterministic_per_seed():
    a_images, a_labels = synthetic_digits(50, seed=7)
    b_images, b_labels = synthetic_digits(50, seed=7)
    c_images, c_labels = synthetic_digits(50, seed=8)
    assert np.array_equal(a_images, b_images) and np.array_equal(a_labels, b_labels)
    assert not np.array_equal(a_images, c_images)
    assert not np.array_equal(a_labels, c_labels)


def test_same_class_varies_and_classes_differ():
    images, labels = synthetic_digits(400, seed=1)
    ones = images[labels == 1].astype(np.float64)
    assert np.abs(ones - ones[0]).sum(axis=(1, 2)).max() > 500  # not copies of one template
    means = np.stack([images[labels == k].mean(axis=0) for k in range(10)])
    gaps = np.abs(means[:, None] - means[None]).sum(axis=(2, 3))
    assert gaps[~np.eye(10, dtype=bool)].min() > 100  # every pair of classes is distinct


def test_learnable_by_nearest_class_mean():
    train_x, train_y = synthetic_digits(1000, seed=1)
    test_x, test_y = synthetic_digits(500, seed=2)
    means = np.stack([train_x[train_y == k].reshape(-1, 784).mean(axis=0) for k in range(10)])
    d = ((test_x.reshape(-1, 1, 784).astype(np.float64) - means[None]) ** 2).sum(-1)
    accuracy = (d.argmin(axis=1) == test_y).mean()
    assert accuracy > 0.7  # a CNN does far better; chance is 0.1


def test_synthetic_mnist():
    data = synthetic_mnist(n_train=40, n_test=20, seed=3)
    assert isinstance(data, MnistArrays)
    assert data.train_images.shape == (40, 28, 28) and data.test_images.shape == (20, 28, 28)
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
    assert "synthetic" in data.source
    again = synthetic_mnist(n_train=40, n_test=20, seed=3)
    assert np.array_equal(data.train_images, again.train_images)
    assert not np.array_equal(data.train_images[:20], data.test_images)  # drawn apart
    other = synthetic_mnist(n_train=40, n_test=20, seed=4)
    assert not np.array_equal(data.train_images, other.train_images)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": -1}, "n must be"),
        ({"n": 2.5}, "n must be"),
        ({"n": 3, "seed": -2}, "seed must be"),
        ({"n": 3, "size": 4}, "size must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(StnDeployError, match=match):
        synthetic_digits(**kwargs)
