"""Checking a benchmark's arguments and working out what to bench (no torch).

Batch sizes, baselines, runtime names (``openvino-bf16`` is OpenVINO computing in its default
bf16, for comparison with the f32 ``openvino``) and the input shape (``input_shape``, else the
checkpoint's, else the golden bundle beside the model, else the model's static dims).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.names import split_items, unique_names
from stn_deploy.runtimes import canonical, default_names
from stn_deploy.runtimes.base import TensorSpec, dims_fit, shown_dims
from stn_deploy.shapes import parse_shape

BASELINE_NAMES = ("torch", "stock-export")
#: runtime names only the benchmark knows: name -> (runtime, session options)
BENCH_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "openvino-bf16": ("openvino", {"precision": "bf16"}),
}

#: runtimes that run models with one input only, and why (a route of a model with several
#: inputs on them is a skip row saying so, not a failure)
ONE_INPUT_RUNTIMES = {
    "ncnn": "stn-deploy's ncnn conversion (pnnx) handles models with one image input only",
}


def inputs_reason(runtime: str, count: int) -> str | None:
    """Why ``runtime`` cannot run a model with ``count`` inputs (None: it can)."""
    why = ONE_INPUT_RUNTIMES.get(runtime)
    return f"{why}; this model has {count}" if why and count > 1 else None


def check_batch_sizes(sizes: int | str | Iterable[int]) -> list[int]:
    """``"1,8,64"``, ``64`` or ``[1, 8]`` -> distinct positive sizes in the given order: the one
    parser of ``batch_sizes`` (bench and run). An empty list or item is an error."""
    if isinstance(sizes, str):
        parts = split_items(sizes, "batch_sizes")
        try:
            values = [int(p) for p in parts]
        except ValueError as exc:
            raise StnDeployError(
                f"{{batch_sizes}} takes integers like 1,8,64, got {sizes!r}", param="batch_sizes"
            ) from exc
    elif isinstance(sizes, int):
        values = [sizes]
    else:
        values = [int(v) for v in sizes]
    if not values:
        raise StnDeployError("{batch_sizes} is empty", param="batch_sizes")
    bad = [v for v in values if v < 1]
    if bad:
        raise StnDeployError(
            f"{{batch_sizes}} must be 1 or more, got {bad[0]}", param="batch_sizes"
        )
    return list(dict.fromkeys(values))


def check_compare(compare: str | Sequence[str] | None) -> list[str]:
    """``"torch,stock-export"`` or a sequence -> the baselines, checked."""
    if compare is None:
        return []

    def baseline(item: str) -> str:
        name = item.strip().lower()
        if name not in BASELINE_NAMES:
            raise StnDeployError(
                f"unknown baseline {item!r} for {{compare}}: choose from "
                f"{', '.join(BASELINE_NAMES)}",
                param="compare",
            )
        return name

    return unique_names(compare, baseline, "compare")


def default_bench_runtimes() -> list[str]:
    """Every runtime worth timing here: ORT's EPs and OpenVINO (not the slow reference)."""
    return [n for n in default_names() if n != "reference"]


def runtime_names(runtimes: str | Sequence[str] | None) -> list[str]:
    """Runtime names (the ``runtimes`` parameter) -> canonical, distinct; None/'all' ->
    :func:`default_bench_runtimes`."""
    if runtimes is None or (isinstance(runtimes, str) and runtimes.strip().lower() == "all"):
        return default_bench_runtimes()

    def runtime(item: str) -> str:
        low = item.strip().lower()
        return low if low in BENCH_ALIASES else canonical(item)

    out = unique_names(runtimes, runtime, "runtimes")
    if not out:
        raise StnDeployError(f"no runtime named in {{runtimes}} {runtimes!r}", param="runtimes")
    return out


def parse_input_shape(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"3,224,224"``, ``"1x42x42"`` or a sequence -> the per-image shape (a leading batch
    of a 4-D shape is dropped)."""
    return parse_shape(text, ndim=None)


def _read_golden(model_path: str | Path) -> tuple[Any, str] | None:
    """The golden bundle beside ``model_path`` (checked to be this model's) and its file name."""
    from stn_deploy.export.golden import bundle_path, check_bundle_matches, read_bundle

    golden = bundle_path(model_path)
    if not golden.is_file():
        return None
    bundle = read_bundle(golden)
    check_bundle_matches(bundle, model_path)  # another model's shape would mislead
    return bundle, golden.name


def resolve_input_shape(
    model_path: str | Path,
    spec: TensorSpec,
    input_shape: Any = None,
    torch_shape: Sequence[int] | None = None,
    golden: Callable[[], tuple[Any, str] | None] | None = None,
) -> tuple[tuple[int, ...], str]:
    """The per-image input shape and where it came from (see the module docstring):
    ``input_shape``, else the torch model's ``torch_shape``, else the golden bundle's (read by
    ``golden()``, default: from beside ``model_path``), else the file's static dims."""
    shape = parse_input_shape(input_shape)
    source = "--input-shape"
    if shape is None and torch_shape is not None:
        shape, source = tuple(int(d) for d in torch_shape), "checkpoint"
    if shape is None:
        found = golden() if golden is not None else _read_golden(model_path)
        if found is not None:
            bundle, name = found
            arr = bundle.inputs.get(spec.name)
            if arr is None and len(bundle.inputs) == 1:
                (arr,) = bundle.inputs.values()
            if arr is not None and arr.ndim >= 2:
                shape, source = tuple(int(d) for d in arr.shape[1:]), f"golden bundle {name}"
    dims = spec.shape[1:] if spec.shape else None
    static = dims is not None and all(isinstance(d, int) and d > 0 for d in dims)
    if shape is None and static:
        shape, source = tuple(dims), "model file"
    if shape is None:
        shown = list(spec.shape) if spec.shape else "unknown"
        raise StnDeployError(
            f"cannot tell the input shape of {Path(model_path).name} (input {spec.name!r} is "
            f"{shown} and no golden bundle is beside it): pass {{input_shape}} C,H,W",
            param="input_shape",
        )
    if dims is not None and not dims_fit(dims, shape):
        raise StnDeployError(
            f"input shape {list(shape)} ({source}) does not fit the model's input "
            f"{spec.name!r} {['N', *shown_dims(dims)]}"
        )
    return shape, source


def split_input_shapes(input_shape: Any, count: int) -> list[Any]:
    """``input_shape`` per input of a model with ``count`` inputs: ``"A;B"`` (the export
    grammar: ``;`` separates inputs, in the file's order) -> ``["A", "B"]``; None -> None for
    each. A single shape is the first input's only when the model has one input."""
    if input_shape is None:
        return [None] * count
    parts = input_shape.split(";") if isinstance(input_shape, str) else [input_shape]
    if len(parts) != count:
        raise StnDeployError(
            f"{{input_shape}} gives {len(parts)} shape(s) for a model with {count} inputs: "
            "separate one per-sample shape per input with ';' (e.g. \"3,32,32;6\")",
            param="input_shape",
        )
    return [p.strip() if isinstance(p, str) else p for p in parts]


def resolve_input_shapes(
    model_path: str | Path,
    specs: Sequence[TensorSpec],
    input_shape: Any = None,
    torch_shapes: Sequence[Sequence[int]] | None = None,
) -> list[tuple[tuple[int, ...], str]]:
    """:func:`resolve_input_shape` of every input: ``input_shape`` split by
    :func:`split_input_shapes`, the torch model's shapes (``torch_shapes``, one per input, in
    ``forward``'s order) in place of the checkpoint's."""
    given = split_input_shapes(input_shape, len(specs))
    if torch_shapes is not None and len(torch_shapes) != len(specs):
        raise StnDeployError(
            f"the torch model takes {len(torch_shapes)} input(s), {Path(model_path).name} "
            f"has {len(specs)}: {[s.name for s in specs]}"
        )
    golden = functools.cache(lambda: _read_golden(model_path))  # read once for all inputs
    return [
        resolve_input_shape(
            model_path, spec, text, None if torch_shapes is None else torch_shapes[i], golden
        )
        for i, (spec, text) in enumerate(zip(specs, given, strict=True))
    ]


def available_memory() -> int | None:
    """Bytes of memory a new allocation can have: /proc/meminfo's MemAvailable (else the free
    physical pages), lowered to what a cgroup v2 memory limit leaves; None when unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = int((cgroup / "memory.max").read_text())  # "max" (no limit) raises ValueError
        left = limit - int((cgroup / "memory.current").read_text())
        avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    return avail


def check_batch_memory(
    sizes: Iterable[int], shape: Sequence[int], dtype: np.dtype, available: int | None = None
) -> None:
    """Refuse a batch size whose input alone needs more memory than is available (``available``
    bytes, default :func:`available_memory`): bench would die allocating it."""
    avail = available_memory() if available is None else available
    if avail is None:
        return
    # inputs are generated in float32 (then cast): at least 4 bytes a value
    per_image = int(np.prod(shape)) * max(np.dtype(dtype).itemsize, 4)
    for b in sizes:
        if b * per_image > avail:
            raise StnDeployError(
                f"batch {b} needs {b * per_image:,} bytes for its input alone ({b} x "
                f"{list(shape)} {np.dtype(dtype).name}), more than the {avail:,} bytes of "
                "memory available: choose smaller {batch_sizes}",
                param="batch_sizes",
            )


def input_dtype(spec: TensorSpec) -> np.dtype:
    """The numpy dtype of the model's input (float32 when the file does not say)."""
    try:
        return np.dtype(spec.dtype)
    except TypeError:
        return np.dtype(np.float32)


def precision_of(meta: dict[str, str], dtype: np.dtype) -> str:
    """The file's ``stn_deploy.precision`` metadata, else guessed from the input dtype."""
    if meta.get("precision"):
        return meta["precision"]
    return {"float16": "fp16", "float32": "fp32", "float64": "fp64", "bfloat16": "bf16"}.get(
        dtype.name, dtype.name
    )
