"""Read and write IDX files, the format the original MNIST files come in.

An IDX file is two zero bytes, a type code, the number of dimensions ``ndim``, then ``ndim``
big-endian ``uint32`` sizes, then the data in C order, big-endian. Files ending in ``.gz``
(or starting with the gzip magic bytes) are compressed with gzip and handled transparently.

Example::

    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x-idx3-ubyte.gz"
    >>> write_idx(path, np.zeros((2, 28, 28), np.uint8))
    >>> read_idx(path).shape
    (2, 28, 28)

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.io.atomic import atomic_path

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed) content of ``path``; errors name the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise StnDeployError(f"IDX file {path} does not exist") from exc
    except OSError as exc:
        raise StnDeployError(f"cannot read IDX file {path}: {exc.strerror or exc}") from exc
    if raw[:2] == _GZIP_MAGIC or path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise StnDeployError(
                f"IDX file {path} is not valid gzip ({exc}): the file is corrupt or truncated; "
                "download it again"
            ) from exc
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-endian array.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``.

    Returns:
        An array of the shape stored in the header, e.g. ``(N, 28, 28)`` ``uint8`` for
        MNIST images and ``(N,)`` ``uint8`` for labels. Multi-byte types come back
        native-endian.

    Raises:
        StnDeployError: the file is missing, has a bad magic number or type code, or is
            shorter or longer than its header says.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise StnDeployError(
            f"IDX file {path} is truncated: {len(data)} bytes, expected at least a 4-byte header"
        )
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES:
        raise StnDeployError(
            f"{path} is not an IDX file: magic bytes {data[:4].hex()}, expected 0000 followed by a "
            f"type code in {{{', '.join(f'{c:02x}' for c in IDX_DTYPES)}}} and the rank"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise StnDeployError(
            f"IDX file {path} is truncated: {len(data)} bytes, header of rank {ndim} "
            f"needs {header_len}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise StnDeployError(
            f"IDX file {path} is {what}: {len(data)} bytes, expected {expected} for shape "
            f"{tuple(shape)} of {dtype.name}; the file is corrupt, download it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    The write is atomic: a temporary file in the same directory is renamed over ``path``.

    Args:
        path: the destination file.
        array: any shape with 1 to 255 dimensions, e.g. ``(N, 28, 28)`` ``uint8``; dtype one of
            uint8, int8, int16, int32, float32, float64 (IDX has no other types).

    Raises:
        StnDeployError: the dtype or rank cannot be stored in IDX, or the file cannot be written.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise StnDeployError(
            f"cannot write {array.dtype} to IDX {path}: expected one of uint8, int8, int16, "
            "int32, float32, float64; cast the array first (e.g. labels.astype(np.uint8))"
        )
    if not 1 <= array.ndim <= 255:
        raise StnDeployError(
            f"cannot write a {array.ndim}-d array to IDX {path}: expected 1 to 255 dimensions"
        )
    if any(s >= 2**32 for s in array.shape):
        raise StnDeployError(
            f"cannot write shape {array.shape} to IDX {path}: sizes must be < 2**32"
        )
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(payload)
    except OSError as exc:
        raise StnDeployError(f"cannot write IDX file {path}: {exc.strerror or exc}") from exc
