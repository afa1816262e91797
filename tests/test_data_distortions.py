"""The paper's distortions: shapes, ranges, determinism and that each one does what it says."""

from __future__ import annotations

import numpy as np
import pytest

import stn_deploy.data.distortions as dist_mod
from stn_deploy.data import CANVAS, KINDS, distort, make_split, split_seed, synthetic_digits
from stn_deploy.errors import StnDeployError

WARPS = [k for k in KINDS if k != "none"]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_digits(64, seed=3)


def _com(x: np.ndarray) -> np.ndarray:
    """Centre of mass ``(N, 2)`` as (x, y) of ``(N, S, S)`` images."""
    r = np.arange(x.shape[-1])
    mass = x.sum(axis=(1, 2))
    return np.stack([(x.sum(axis=1) * r).sum(1) / mass, (x.sum(axis=2) * r).sum(1) / mass], 1)


@pytest.mark.parametrize("kind", KINDS)
def test_shape_dtype_range(digits, kind):
    images, _ = digits
    out = distort(images, kind, seed=0)
    size = CANVAS[kind]
    assert out.shape == (len(images), size, size)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out.reshape(len(images), -1).max(axis=1) > 0.3).all()  # no digit vanished
    float_out = distort(images.astype(np.float32) / 255.0, kind, seed=0)
    np.testing.assert_allclose(float_out, out, atol=1e-5)  # float input in [0, 1] is the same


@pytest.mark.parametrize("kind", WARPS)
def test_deterministic_per_seed(digits, kind):
    images, _ = digits
    a = distort(images, kind, seed=11)
    b = distort(images.copy(), kind.upper(), seed=11)
    c = distort(images, kind, seed=12)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # each image gets its own parameters


@pytest.mark.parametrize("kind", WARPS)
def test_independent_of_chunk_size(digits, kind, monkeypatch):
    images, _ = digits
    whole = distort(images, kind, seed=5)
    monkeypatch.setattr(dist_mod, "_CHUNK", 7)
    assert np.array_equal(distort(images, kind, seed=5), whole)


def test_none_is_input_over_255(digits):
    images, _ = digits
    out = distort(images, "none", seed=0)
    np.testing.assert_array_equal(out, images.astype(np.float32) / np.float32(255))
    assert not np.shares_memory(out, images)


def test_bilinear_identity_and_shift():
    rng = np.random.default_rng(0)
    img = rng.random((2, 28, 28), dtype=np.float32)
    x, y = dist_mod._grid(28)
    x, y = np.broadcast_to(x, img.shape), np.broadcast_to(y, img.shape)
    np.testing.assert_array_equal(dist_mod._bilinear(img, x, y), img)
    shifted = dist_mod._bilinear(img, x + 1.0, y)  # sample one pixel to the right
    np.testing.assert_array_equal(shifted[:, :, :-1], img[:, :, 1:])
    assert (shifted[:, :, -1] == 0).all()  # zero padding
    half = dist_mod._bilinear(img, x + 0.5, y + 0.5)
    expect = (img[:, :-1, :-1] + img[:, :-1, 1:] + img[:, 1:, :-1] + img[:, 1:, 1:]) / 4
    np.testing.assert_allclose(half[:, :-1, :-1], expect, atol=1e-6)
    far = dist_mod._bilinear(img, x + np.nan, y - 100.0)
    assert (far == 0).all()


def test_r_rotates_about_the_centre():
    # A small blob 8 px right of the centre: its centre of mass must stay at radius ~8 and
    # turn by angles spread over +-90 degrees, never more.
    image = np.zeros((28, 28), np.uint8)
    image[13:15, 21:23] = 255  # centre of mass (21.5, 13.5); image centre (13.5, 13.5)
    out = distort(np.repeat(image[None], 400, axis=0), "r", seed=0)
    offset = _com(out) - 13.5
    radius = np.hypot(offset[:, 0], offset[:, 1])
    angle = np.degrees(np.arctan2(offset[:, 1], offset[:, 0]))
    np.testing.assert_allclose(radius, 8.0, atol=0.3)
    assert np.abs(angle).max() <= 90.5
    assert angle.min() < -75 and angle.max() > 75
    assert np.abs(angle).mean() == pytest.approx(45, abs=6)  # uniform in +-90
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 4.0, rtol=0.06)  # mass kept


def test_rts_positions_vary_and_digits_stay_inside(digits):
    images, _ = digits
    out = distort(np.tile(images, (4, 1, 1)), "rts", seed=2)
    com = _com(out)
    assert com.std(axis=0).min() > 3.0  # spread over the 42x42 canvas
    assert com.min() < 14 and com.max() > 27
    border = out.copy()
    border[:, 1:-1, 1:-1] = 0
    assert border.max() < 0.6  # at most bilinear blur touches the edge
    ratio = out.sum(axis=(1, 2)) / (np.tile(images, (4, 1, 1)).sum(axis=(1, 2)) / 255.0)
    assert 0.7**2 * 0.95 < ratio.min() and ratio.max() < 1.2**2 * 1.05  # area ~ scale^2
    assert ratio.max() / ratio.min() > 2.0  # scales really vary


def test_e_warps_but_keeps_the_digit(digits):
    images, _ = digits
    base = images.astype(np.float32) / 255.0
    out = distort(images, "e", seed=4)
    corr = np.array(
        [np.corrcoef(o.ravel(), b.ravel())[0, 1] for o, b in zip(out, base, strict=True)]
    )
    assert corr.min() > 0.1 and 0.4 < np.median(corr) < 0.95  # changed, still the same digit
    ratio = out.sum(axis=(1, 2)) / base.sum(axis=(1, 2))
    assert 0.6 < ratio.min() and ratio.max() < 1.7


def test_p_maps_the_image_square_onto_the_drawn_quadrilateral():
    n, seed = 300, 6
    solid = np.full((n, 28, 28), 255, np.uint8)
    out = distort(solid, "p", seed=seed)
    quad = dist_mod._draw_p(np.random.default_rng(seed), n, None)["dst"]
    square = np.array([[-0.5, -0.5], [27.5, -0.5], [27.5, 27.5], [-0.5, 27.5]])
    # the quadrilateral's corners land on the image corners ...
    h = dist_mod._homographies(quad, np.broadcast_to(square, quad.shape))
    r = np.arange(28.0)
    py, px = np.meshgrid(r, r, indexing="ij")
    pts = np.stack([px.ravel(), py.ravel(), np.ones(784)])  # (3, 784)
    src = h @ pts  # (n, 3, 784)
    w = src[:, 2]
    sx, sy = (src[:, 0] / w).reshape(n, 28, 28), (src[:, 1] / w).reshape(n, 28, 28)
    centre = quad.mean(axis=1)  # inside the (convex) quadrilateral
    w_centre = h[:, 2, 0] * centre[:, 0] + h[:, 2, 1] * centre[:, 1] + h[:, 2, 2]
    front = (w * w_centre[:, None] > 0).reshape(n, 28, 28)  # this side of the vanishing line
    inside = front & (sx >= 0) & (sx <= 27) & (sy >= 0) & (sy <= 27)
    outside = ~front | (sx < -1) | (sx > 28) | (sy < -1) | (sy > 28)
    # ... so a solid image is ink exactly where the output pixel maps into it
    assert (out[inside] > 0.999).all()
    assert (out[outside] == 0).all()
    assert inside.sum(axis=(1, 2)).min() > 50
    assert out.sum(axis=(1, 2)).std() > 40  # scale and corners vary
    sides = np.linalg.norm(quad - np.roll(quad, 1, axis=1), axis=-1)  # (n, 4)
    assert sides.std(axis=1).mean() > 2.0  # corners really move: not scaled squares


def test_homography_maps_the_four_points():
    rng = np.random.default_rng(0)
    src = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])[None] + rng.normal(
        0, 1, (5, 4, 2)
    )
    dst = src + rng.normal(0, 2, src.shape)
    h = dist_mod._homographies(src, dst)
    mapped = np.einsum("bij,bkj->bki", h, np.concatenate([src, np.ones((5, 4, 1))], -1))
    np.testing.assert_allclose(mapped[..., :2] / mapped[..., 2:], dst, atol=1e-8)


def test_tps_basis_reproduces_control_points():
    basis = dist_mod._tps_basis()  # (784, 16)
    gy, gx = np.meshgrid(dist_mod.E_GRID, dist_mod.E_GRID, indexing="ij")
    pixel = (gy * 28 + gx).astype(int).ravel()
    np.testing.assert_allclose(basis[pixel], np.eye(16), atol=1e-4)  # interpolates
    np.testing.assert_allclose(basis.sum(axis=1), 1.0, atol=1e-4)  # reproduces translations


def test_tc_digit_position_and_clutter():
    n = 200
    blocks = np.full((n, 28, 28), 255, np.uint8)
    # The digit alone (clutter from an empty pool): one full 28x28 block anywhere on 60x60.
    alone = distort(blocks, "tc", seed=1, clutter_pool=np.zeros((3, 28, 28), np.uint8))
    assert (alone.sum(axis=(1, 2)) == 28 * 28).all()
    corner = np.argwhere(alone > 0).reshape(n, -1, 3)[:, 0, 1:]  # top-left (row, col)
    assert corner.min() == 0 and corner.max() == 32  # uniform over all 33 offsets
    assert corner.std(axis=0).min() > 7

    # Clutter alone (blank digits, solid pool): 6 fragments of 6x6, nothing else.
    clutter = distort(np.zeros((n, 28, 28), np.uint8), "tc", seed=1, clutter_pool=blocks[:5])
    counts = (clutter > 0).sum(axis=(1, 2))
    assert counts.min() >= 36 and counts.max() <= 6 * 36
    assert counts.mean() > 5 * 36  # fragments rarely overlap
    assert set(np.unique(clutter)) == {0.0, 1.0}

    # Both: clutter lands away from the digit in most images.
    both = distort(blocks, "tc", seed=1, clutter_pool=blocks[:5])
    outside = (both > 0).sum(axis=(1, 2)) - 28 * 28
    assert (outside > 0).mean() > 0.9


def test_tc_default_pool_never_uses_the_image_itself():
    solid = np.full((28, 28), 255, np.uint8)
    for seed in range(5):
        images = np.stack([solid, np.zeros_like(solid)])
        out = distort(images, "tc", seed=seed)
        # image 0 can only take clutter from the blank image 1: exactly its own block
        assert out[0].sum() == 28 * 28
        # image 1 (blank) takes its clutter from image 0
        assert 36 <= (out[1] > 0).sum() <= 6 * 36
    with pytest.raises(StnDeployError, match="clutter_pool"):
        distort(solid[None], "tc", seed=0)
    assert distort(solid[None], "tc", seed=0, clutter_pool=solid[None]).shape == (1, 60, 60)


def test_tc_with_real_looking_digits_adds_clutter(digits):
    images, _ = digits
    out = distort(images, "tc", seed=0)
    gain = out.sum(axis=(1, 2)) - images.sum(axis=(1, 2)) / 255.0
    assert (gain > 0.5).mean() > 0.9  # fragments of other digits add ink


def test_input_checks(digits):
    images, _ = digits
    with pytest.raises(StnDeployError, match="unknown distortion 'x'.*none, r, rts, p, e, tc"):
        distort(images, "x", seed=0)
    with pytest.raises(StnDeployError, match=r"\(N, 28, 28\), got \(64, 1, 28, 28\)"):
        distort(images[:, None], "r", seed=0)
    with pytest.raises(StnDeployError, match=r"\[0, 1\].*divide by 255"):
        distort(images.astype(np.float32), "r", seed=0)
    with pytest.raises(StnDeployError, match="0..255"):
        distort(images.astype(np.int32) * 2, "r", seed=0)
    with pytest.raises(StnDeployError, match="non-negative integer"):
        distort(images, "r", seed=-1)
    with pytest.raises(StnDeployError, match="clutter_pool"):
        distort(images, "tc", seed=0, clutter_pool=np.zeros((3, 20, 20), np.uint8))
    assert distort(images[:0], "rts", seed=0).shape == (0, 42, 42)


def test_make_split_seeds(digits):
    images, labels = digits
    x, y = make_split(images, labels, "rts", seed=0, split="test", epoch=0)
    assert x.shape == (64, 1, 42, 42) and x.dtype == np.float32
    assert y.dtype == np.int64 and np.array_equal(y, labels)
    x_test_later, _ = make_split(images, labels, "RTS", seed=0, split="test", epoch=9)
    assert np.array_equal(x, x_test_later)  # the test split is fixed per seed
    x_train0, _ = make_split(images, labels, "rts", seed=0, split="train", epoch=0)
    x_train0b, _ = make_split(images, labels, "rts", seed=0, split="train", epoch=0)
    x_train1, _ = make_split(images, labels, "rts", seed=0, split="train", epoch=1)
    x_seed1, _ = make_split(images, labels, "rts", seed=1, split="test")
    assert np.array_equal(x_train0, x_train0b)
    assert not np.array_equal(x_train0, x_train1)  # re-drawn per epoch
    assert not np.array_equal(x_train0, x)  # train and test differ
    assert not np.array_equal(x, x_seed1)
    assert np.array_equal(x[:, 0], distort(images, "rts", split_seed(0, "test")))
    with pytest.raises(StnDeployError, match="unknown split"):
        make_split(images, labels, "r", seed=0, split="dev")
    with pytest.raises(StnDeployError, match=r"labels must be \(64,\)"):
        make_split(images, labels[:-1], "r", seed=0)
