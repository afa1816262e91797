"""Tracing a torch model into an ONNX graph with the sampler placeholder (torch side).

The default is torch.export (``torch.onnx.export(dynamo=True)``,
:mod:`stn_deploy.pytorch.dynamo_trace`) at opset 16 and above; torch's deprecated TorchScript
exporter (``dynamo=False``) below, or by name. Both run inside the grid-generator contexts of
:mod:`stn_deploy.pytorch.grid_generators`. The last few traces of the process are kept, so one
model exported in several lowerings or precisions is traced once.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections import OrderedDict

import onnx
import torch
from torch import nn

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.pytorch.export_io import model_dtype
from stn_deploy.pytorch.grid_generators import (
    lowered_grid_generators,
    matmul_affine_grids,
    separable_attention,
)
from stn_deploy.runtimes.stderr import captured_fds

EXPORTERS = ("dynamo", "torchscript")


#: below this opset the default exporter is TorchScript (onnx's version converter cannot bring
#: the dynamo exporter's opset-18 graphs lower: it has no adapter for Relu 14, for one)
DYNAMO_MIN_OPSET = 16


_warned_torchscript = False


def default_exporter(opset: int) -> str:
    """The exporter used when none is named: dynamo (torch.export), or TorchScript below
    :data:`DYNAMO_MIN_OPSET`."""
    return "dynamo" if opset >= DYNAMO_MIN_OPSET else "torchscript"


def warn_torchscript_once() -> None:
    global _warned_torchscript
    if not _warned_torchscript:
        _warned_torchscript = True
        warnings.warn(
            "the torchscript exporter (exporter='torchscript', --exporter torchscript) uses "
            "torch's TorchScript ONNX exporter (dynamo=False), deprecated upstream since torch 2.9",
            FutureWarning,
            stacklevel=3,
        )


#: the last few traces of this process: (the model's identity and weight versions, the trace
#: arguments) -> (trace, separable count). Exporting the same model in another lowering or
#: precision re-lowers the trace instead of running torch.export again; a weight changed in
#: place bumps its tensor version, so it is a new key.
_TRACES: OrderedDict[tuple, tuple[onnx.ModelProto, int]] = OrderedDict()


_TRACES_KEPT = 4


def trace_key(model: nn.Module, args: tuple) -> tuple:
    tensors = (*model.named_parameters(), *model.named_buffers())
    state = tuple((n, t.data_ptr(), t._version, tuple(t.shape), t.dtype) for n, t in tensors)
    return (id(model), type(model).__qualname__, state, args)


def trace(
    model: nn.Module,
    shape,
    names: list[str],
    opset: int,
    dynamic_batch: bool,
    separable: bool = True,
    exporter: str = "dynamo",
    input_names: tuple[str, ...] = ("image",),
) -> tuple[onnx.ModelProto, int]:
    """torch.onnx.export with our grid generators and the sampler placeholder; also returns
    how many samplers were written in the separable form. ``shape``: the per-sample shape, or
    a list of them for a model taking several tensors. A trace of the same model (same
    weights) with the same arguments is taken from this process's last few."""
    shapes = (
        tuple(tuple(s) for s in shape) if isinstance(shape[0], (tuple, list)) else (tuple(shape),)
    )
    args = (shapes, tuple(names), opset, dynamic_batch, separable, exporter, tuple(input_names))
    key = trace_key(model, args)
    if key not in _TRACES:
        _TRACES[key] = _fresh_trace(model, *args)
        while len(_TRACES) > _TRACES_KEPT:
            _TRACES.popitem(last=False)
    _TRACES.move_to_end(key)
    traced, n_separable = _TRACES[key]
    copy = onnx.ModelProto()
    copy.CopyFrom(traced)
    return copy, n_separable


def _fresh_trace(model, shapes, names, opset, dynamic_batch, separable, exporter, input_names):
    """One torch.onnx.export (see :func:`_trace`)."""
    names, input_names = list(names), list(input_names)
    applied: list = []
    separable_ctx = separable_attention(applied) if separable else contextlib.nullcontext()
    if exporter == "dynamo":
        from stn_deploy.pytorch.dynamo_trace import dynamo_trace

        batch = 2 if dynamic_batch else 1
        example = tuple(torch.zeros(batch, *s, dtype=model_dtype(model)) for s in shapes)
        with matmul_affine_grids(), separable_ctx:
            traced = dynamo_trace(model, example, input_names, names, opset, dynamic_batch)
        return traced, len(applied)
    return _torchscript_trace(
        model, shapes, names, opset, dynamic_batch, separable_ctx, input_names
    ), len(applied)


def _torchscript_reason(exc: BaseException) -> str:
    """The TorchScript exporter's message without its boilerplate and graph excerpts."""
    text = one_line(exc).split("[Caused by", 1)[0]
    text = re.sub(r"\s*Please feel free to request support.*", "", text)
    return text.strip().rstrip(".")[:300]


def _torchscript_trace(model, shapes, names, opset, dynamic_batch, separable_ctx, input_names):
    """torch's TorchScript exporter (``dynamo=False``) at batch 1; its C++ diagnostics (graph
    dumps) are kept off the terminal and a failure is one line."""
    buf = io.BytesIO()
    axes = {n: {0: "N"} for n in [*input_names, *names]} if dynamic_batch else None
    try:
        with (
            lowered_grid_generators(),
            separable_ctx,
            warnings.catch_warnings(),
            torch.inference_mode(False),
            captured_fds((1, 2)),  # its C++ graph dump on a failure
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                tuple(torch.zeros(1, *s, dtype=model_dtype(model)) for s in shapes),
                buf,
                opset_version=opset,
                dynamo=False,
                input_names=input_names,
                output_names=names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except StnDeployError:
        raise
    except Exception as exc:  # the exporter's own errors: one line naming the op
        raise StnDeployError(
            f"torch.onnx.export (TorchScript) failed at opset {opset}: {_torchscript_reason(exc)} "
            "(the dynamo exporter, {exporter}='dynamo', may export it)",
            param="exporter",
        ) from None
    return onnx.load_from_string(buf.getvalue())
