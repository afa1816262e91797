"""Golden input/output bundles (``NAME.io.npz``) written beside an exported model (numpy only).

A bundle lets a device without torch check a model: seeded inputs and the reference (torch)
outputs, plus JSON metadata tying it to the model file it was made for. Layout, an ``.npz``
readable with ``np.load(path, allow_pickle=False)``::

    input/<name>    one array per model input, e.g. input/image (8, 1, 42, 42) float32
    output/<name>   one array per reference output (and exposed intermediates)
    output64/<name> optional: the same outputs from the model in float64 (``model.double()``),
                    so that verify without torch knows float32's own error on the golden
                    inputs (:mod:`stn_deploy.verify.inherent`); bundles written before it
                    existed have none, and readers that predate it ignore it
    meta            0-d unicode array: JSON with "format", "model_sha256", "source", ...

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.io.npz"
    >>> _ = write_bundle(p, {"image": np.zeros((1, 1, 4, 4), np.float32)},
    ...                  {"logits": np.ones((1, 10), np.float32)}, {"source": "doc"})
    >>> b = read_bundle(p); sorted(b.inputs), b.outputs["logits"].shape, b.meta["source"]
    (['image'], (1, 10), 'doc')
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.io.atomic import replace_together, write_bytes_atomic
from stn_deploy.io.hashing import file_sha256
from stn_deploy.io.locks import destination_lock
from stn_deploy.runtimes.base import TensorSpec, dims_fit, shown_dims

FORMAT = "stn-deploy/golden-v1"


@dataclass
class GoldenBundle:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    #: the reference outputs computed in float64 (``{}``: not stored)
    outputs64: dict[str, np.ndarray] = field(default_factory=dict)


def bundle_path(model_path: str | Path) -> Path:
    """``dir/NAME.onnx`` -> ``dir/NAME.io.npz``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".io.npz")


def _check_arrays(kind: str, arrays: dict[str, np.ndarray]) -> None:
    if not arrays:
        raise StnDeployError(f"a golden bundle needs at least one {kind}")
    for name, a in arrays.items():
        if not name or "/" in name:
            raise StnDeployError(f"golden {kind} name {name!r} is empty or contains '/'")
        if not isinstance(a, np.ndarray) or a.dtype == object:
            raise StnDeployError(f"golden {kind} {name!r} must be a numeric numpy array")


def encode_bundle(
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
    outputs64: dict[str, np.ndarray] | None = None,
) -> bytes:
    """The bytes of a bundle file (same arrays and meta give the same bytes)."""
    _check_arrays("input", inputs)
    _check_arrays("output", outputs)
    if outputs64:
        _check_arrays("output", outputs64)
    payload = {f"input/{k}": np.ascontiguousarray(v) for k, v in sorted(inputs.items())}
    payload.update({f"output/{k}": np.ascontiguousarray(v) for k, v in sorted(outputs.items())})
    payload.update(
        {f"output64/{k}": np.ascontiguousarray(v) for k, v in sorted((outputs64 or {}).items())}
    )
    payload["meta"] = np.array(json.dumps({"format": FORMAT, **(meta or {})}, sort_keys=True))
    buf = io.BytesIO()
    # np.savez stamps the current time into the zip entries; write the zip ourselves with a
    # fixed date so identical bundles are byte-identical.
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in payload.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)
    return buf.getvalue()


def write_bundle(
    path: str | Path,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
    outputs64: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a bundle atomically (same arrays and meta give the same bytes)."""
    write_bytes_atomic(path, encode_bundle(inputs, outputs, meta, outputs64))
    return Path(path)


def write_model_with_bundle(
    model_path: str | Path,
    data: bytes,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
    outputs64: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write the model bytes ``data`` to ``model_path`` and its bundle beside it, as a pair
    (``outputs64``: the reference outputs in float64, optional).

    One writer at a time (:func:`~stn_deploy.io.locks.destination_lock` on the model path; a
    second one fails at once). Both files are written in full before either is renamed in, the
    bundle first: it records the model's sha256, so a kill between the two renames leaves a
    bundle that :func:`check_bundle_matches` (run by every reader) rejects, and the next write
    of the pair repairs it. Returns the bundle's path.
    """
    model_path = Path(model_path)
    golden = bundle_path(model_path)
    meta = {**(meta or {}), "model_sha256": hashlib.sha256(data).hexdigest()}
    meta.setdefault("model", model_path.name)
    blob = encode_bundle(inputs, outputs, meta, outputs64)
    with destination_lock(model_path):
        replace_together([(golden, blob), (model_path, data)])
    return golden


def read_bundle(path: str | Path) -> GoldenBundle:
    """Read a bundle written by :func:`write_bundle`; anything else is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise StnDeployError(f"golden bundle not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile / format / pickle-refused errors alike
        raise StnDeployError(
            f"cannot read golden bundle {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if "meta" not in arrays:
        raise StnDeployError(f"{path} is not a stn-deploy golden bundle (no 'meta')")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise StnDeployError(f"{path}: the bundle's meta is not JSON") from exc
    if meta.get("format") != FORMAT:
        raise StnDeployError(
            f"{path}: unknown bundle format {meta.get('format')!r}, expected {FORMAT}"
        )
    inputs = {k[len("input/") :]: v for k, v in arrays.items() if k.startswith("input/")}
    outputs = {k[len("output/") :]: v for k, v in arrays.items() if k.startswith("output/")}
    out64 = {k[len("output64/") :]: v for k, v in arrays.items() if k.startswith("output64/")}
    if not inputs or not outputs:
        raise StnDeployError(f"{path}: the bundle holds no {'inputs' if not inputs else 'outputs'}")
    return GoldenBundle(inputs, outputs, meta, out64)


def check_bundle_matches(bundle: GoldenBundle, model_path: str | Path) -> None:
    """Raise when ``bundle`` was made for another file than ``model_path`` (sha256 recorded)."""
    want = bundle.meta.get("model_sha256")
    if want is None:
        return
    got = file_sha256(model_path)
    if got != want:
        name = Path(model_path).name
        raise StnDeployError(
            f"the golden bundle {bundle_path(model_path).name} was made for another model: sha256 "
            f"{want[:12]}..., {name} has {got[:12]}... (an interrupted or concurrent write?): "
            f"export (or quantize) {name} again to write a matching pair"
        )


def check_bundle(
    bundle: GoldenBundle,
    path: str | Path,
    model_path: str | Path,
    inputs: list[TensorSpec],
    outputs: list[str],
) -> None:
    """Everything ``verify`` and ``quantize`` require of the golden ``bundle`` (read from
    ``path``) for the model at ``model_path`` (``inputs``: its input specs, ``outputs``: its
    output names): made for that file (sha256), the model's inputs in shapes it takes, a
    reference for each output, and no NaN or Inf in any array."""
    name = Path(path).name
    check_bundle_matches(bundle, model_path)
    want = {t.name: t for t in inputs}
    if sorted(bundle.inputs) != sorted(want):
        raise StnDeployError(
            f"the golden bundle {name} has inputs {sorted(bundle.inputs)}, the model takes "
            f"{sorted(want)}"
        )
    for key, arr in bundle.inputs.items():
        dims = want[key].shape
        if dims is not None and not dims_fit(dims, arr.shape, any_batch=True):
            raise StnDeployError(
                f"the golden bundle's input {key!r} has shape {list(arr.shape)}, the model takes "
                f"{shown_dims(dims)}"
            )
    missing = sorted(set(outputs) - set(bundle.outputs))
    if missing:
        raise StnDeployError(
            f"the golden bundle {name} has no reference for the model's outputs {missing} "
            f"(it holds {sorted(bundle.outputs)})"
        )
    for key, arr in list(bundle.outputs64.items()):
        if key not in bundle.outputs or arr.shape != bundle.outputs[key].shape:
            del bundle.outputs64[key]  # not this output's: unusable, ignored
    for kind, arrays in (
        ("input", bundle.inputs),
        ("output", bundle.outputs),
        ("float64 output", bundle.outputs64),
    ):
        for key, arr in arrays.items():
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
                raise StnDeployError(
                    f"the golden bundle {name} is unusable: its {kind} {key!r} holds {nan} NaN "
                    f"and {inf} Inf (cannot verify against it, nor copy it)"
                )
