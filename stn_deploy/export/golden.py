"""Golden input/output bundles (``NAME.io.npz``) written beside an exported model (numpy only).

A bundle lets a device without torch check a model: seeded inputs and the reference (torch)
outputs, plus JSON metadata tying it to the model file it was made for. Layout, an ``.npz``
readable with ``np.load(path, allow_pickle=False)``::

    input/<name>    one array per model input, e.g. input/image (8, 1, 42, 42) float32
    output/<name>   one array per reference output (and exposed intermediates)
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

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.io.atomic import atomic_path
from stn_deploy.io.hashing import file_sha256

FORMAT = "stn-deploy/golden-v1"


@dataclass
class GoldenBundle:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


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


def write_bundle(
    path: str | Path,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle atomically (same arrays and meta give the same bytes)."""
    _check_arrays("input", inputs)
    _check_arrays("output", outputs)
    payload = {f"input/{k}": np.ascontiguousarray(v) for k, v in sorted(inputs.items())}
    payload.update({f"output/{k}": np.ascontiguousarray(v) for k, v in sorted(outputs.items())})
    payload["meta"] = np.array(json.dumps({"format": FORMAT, **(meta or {})}, sort_keys=True))
    with atomic_path(path) as tmp:
        # np.savez stamps the current time into the zip entries; write the zip ourselves with a
        # fixed date so identical bundles are byte-identical.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key, value in payload.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w") as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)
    return Path(path)


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
        ) from None
    if "meta" not in arrays:
        raise StnDeployError(f"{path} is not a stn-deploy golden bundle (no 'meta')")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError:
        raise StnDeployError(f"{path}: the bundle's meta is not JSON") from None
    if meta.get("format") != FORMAT:
        raise StnDeployError(
            f"{path}: unknown bundle format {meta.get('format')!r}, expected {FORMAT}"
        )
    inputs = {k[len("input/") :]: v for k, v in arrays.items() if k.startswith("input/")}
    outputs = {k[len("output/") :]: v for k, v in arrays.items() if k.startswith("output/")}
    if not inputs or not outputs:
        raise StnDeployError(f"{path}: the bundle holds no {'inputs' if not inputs else 'outputs'}")
    return GoldenBundle(inputs, outputs, meta)


def check_bundle_matches(bundle: GoldenBundle, model_path: str | Path) -> None:
    """Raise when ``bundle`` was made for another file than ``model_path`` (sha256 recorded)."""
    want = bundle.meta.get("model_sha256")
    if want is None:
        return
    got = file_sha256(model_path)
    if got != want:
        raise StnDeployError(
            f"the golden bundle was made for another model: sha256 {want[:12]}..., "
            f"{Path(model_path).name} has {got[:12]}..."
        )
