"""Golden I/O bundles: round trip, determinism, atomicity and the error paths."""

import zipfile

import numpy as np
import pytest

from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import (
    bundle_path,
    check_bundle_matches,
    read_bundle,
    write_bundle,
)
from stn_deploy.io.hashing import file_sha256


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return (
        {"image": rng.random((4, 1, 42, 42), dtype=np.float32)},
        {
            "log_probs": rng.standard_normal((4, 10)).astype(np.float32),
            "theta": np.eye(2, 3, dtype=np.float64)[None],
        },
    )


def test_round_trip_and_byte_identical(tmp_path):
    inputs, outputs = _arrays()
    a = write_bundle(tmp_path / "a.io.npz", inputs, outputs, {"source": "seeded random", "seed": 0})
    b = write_bundle(tmp_path / "b.io.npz", inputs, outputs, {"source": "seeded random", "seed": 0})
    assert a.read_bytes() == b.read_bytes()
    got = read_bundle(a)
    assert got.meta == {"format": "stn-deploy/golden-v1", "source": "seeded random", "seed": 0}
    assert (
        np.array_equal(got.inputs["image"], inputs["image"])
        and got.inputs["image"].dtype == np.float32
    )
    assert set(got.outputs) == {"log_probs", "theta"} and got.outputs["theta"].dtype == np.float64
    other = write_bundle(tmp_path / "c.io.npz", *_arrays(1))
    assert other.read_bytes() != a.read_bytes()


def test_bundle_path_and_model_binding(tmp_path):
    model = tmp_path / "mnist-affine.onnx"
    model.write_bytes(b"model bytes")
    assert bundle_path(model) == tmp_path / "mnist-affine.io.npz"
    inputs, outputs = _arrays()
    write_bundle(bundle_path(model), inputs, outputs, {"model_sha256": file_sha256(model)})
    check_bundle_matches(read_bundle(bundle_path(model)), model)
    model.write_bytes(b"another model")
    with pytest.raises(StnDeployError, match="made for another model"):
        check_bundle_matches(read_bundle(bundle_path(model)), model)


def test_bad_bundles(tmp_path):
    with pytest.raises(StnDeployError, match="not found"):
        read_bundle(tmp_path / "none.io.npz")
    junk = tmp_path / "junk.io.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(StnDeployError, match="cannot read golden bundle"):
        read_bundle(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.zeros(3))
    with pytest.raises(StnDeployError, match="no 'meta'"):
        read_bundle(plain)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array("{}"), **{"input/x": np.array([object()], dtype=object)})
    with pytest.raises(StnDeployError, match="cannot read golden bundle"):
        read_bundle(pickled)  # object arrays would need pickle: refused
    with pytest.raises(StnDeployError, match="at least one input"):
        write_bundle(tmp_path / "e.io.npz", {}, {"y": np.zeros(1)})
    assert not (tmp_path / "e.io.npz").exists()


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "open", boom)
    with pytest.raises(OSError):
        write_bundle(tmp_path / "x.io.npz", *_arrays())
    assert list(tmp_path.iterdir()) == []
