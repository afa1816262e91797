"""The runtime protocol: load a model, run named numpy inputs, say what it is and where nodes ran.

No torch and no runtime import here: each implementation imports its runtime lazily, so a runtime
that is not installed costs nothing until it is asked for (and then says why it cannot run).

Example:
    >>> from stn_deploy.runtimes import open_session
    >>> s = open_session("cpu", "exported/mnist-affine-native.onnx")  # doctest: +SKIP
    >>> s.info.name, [t.name for t in s.inputs]                         # doctest: +SKIP
    ('cpu', ['image'])
    >>> s.run({"image": x})["log_probs"].shape                          # doctest: +SKIP
    (8, 10)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError


class RuntimeUnavailable(StnDeployError):
    """The runtime is not installed or has no device here; the message says why."""


def dims_fit(
    dims: tuple[int | str | None, ...], shape: tuple[int, ...], *, any_batch: bool = False
) -> bool:
    """Whether an array ``shape`` fits a model's ``dims``: same rank, and every fixed (positive
    int) dim equal; symbolic or unknown dims take any size, and so does the first with
    ``any_batch``."""
    return len(dims) == len(shape) and not any(
        isinstance(d, int) and d > 0 and d != s and not (any_batch and i == 0)
        for i, (d, s) in enumerate(zip(dims, shape, strict=True))
    )


def shown_dims(dims: tuple[int | str | None, ...]) -> list[int | str]:
    """A model's dims for a message: fixed ones as numbers, the others as ``"?"``."""
    return ["?" if not isinstance(d, int) or d <= 0 else d for d in dims]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, numpy dtype name, dims (int, symbolic name, or None)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None

    def fixed_batch(self) -> int | None:
        """The batch (first) dimension when it is a fixed number, else None."""
        if not self.shape or not isinstance(self.shape[0], int) or self.shape[0] <= 0:
            return None
        return self.shape[0]


@dataclass(frozen=True)
class RuntimeInfo:
    """What a session runs on: the runtime name as given on the command line, the library and
    its version, the device, and the providers or plugins it actually uses."""

    name: str
    library: str
    version: str
    device: str
    providers: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["providers"] = list(self.providers)
        return d


@dataclass(frozen=True)
class NodePlacement:
    """Where one node of the (optimised) graph ran, as the runtime reports it."""

    node: str
    op_type: str
    provider: str


class RuntimeSession(ABC):
    """One loaded model on one runtime."""

    info: RuntimeInfo
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: the provider/device every node should run on (fallbacks are nodes elsewhere)
    primary: str = ""

    @abstractmethod
    def run(
        self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model on named inputs; returns the named outputs (all, or ``output_names``)."""

    def placement(self, feeds: dict[str, np.ndarray]) -> list[NodePlacement] | None:
        """Where each node ran on ``feeds``, or None when the runtime does not report it."""
        return None

    def fallbacks(self, feeds: dict[str, np.ndarray]) -> list[NodePlacement] | None:
        """Nodes that did not run on :attr:`primary` (None: placement not reported)."""
        placed = self.placement(feeds)
        if placed is None:
            return None
        return [p for p in placed if p.provider != self.primary]

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise a one-line error when ``feeds`` do not match the model's inputs."""
        want = {t.name: t for t in self.inputs}
        missing = sorted(set(want) - set(feeds))
        extra = sorted(set(feeds) - set(want))
        if missing or extra:
            raise StnDeployError(
                f"inputs do not match the model: it takes {sorted(want)}, got {sorted(feeds)}"
            )
        for name, arr in feeds.items():
            spec = want[name]
            if spec.shape is None:
                continue
            if not dims_fit(spec.shape, arr.shape):
                raise StnDeployError(
                    f"input {name!r} has shape {list(arr.shape)}, the model takes "
                    f"{shown_dims(spec.shape)}"
                )


def onnx_specs(values) -> list[TensorSpec]:
    """TensorSpecs of ONNX ``ValueInfoProto`` graph inputs/outputs."""
    from onnx import helper

    specs = []
    for vi in values:
        t = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
        shape = None
        if t.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in t.shape.dim
            )
        specs.append(TensorSpec(vi.name, dtype, shape))
    return specs


def load_onnx(path: str | Path):
    """``onnx.load`` with one-line errors for a missing, empty or corrupt file: the one
    loader, :func:`stn_deploy.export.onnx_file.load_onnx`."""
    from stn_deploy.export.onnx_file import load_onnx as _load

    return _load(path)


def load_inlined(model):
    """``model`` (an ONNX path or a ModelProto) with its model-local functions written in place
    (the same model without any): OpenVINO's frontend does not expand them, and the reference
    evaluator's corrected ops must apply inside them too."""
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
    if proto.functions:
        import onnx.inliner

        proto = onnx.inliner.inline_local_functions(proto)
    return proto


def default_opset(model) -> int:
    """The model's opset of the default (ai.onnx) domain; 0 when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def graph_inputs(model) -> list:
    """Graph inputs that are real inputs (not initializers listed as inputs, IR < 4)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]
