"""The torch.export path of the exporter (``exporter="dynamo"``, ``--exporter dynamo``).

``torch.onnx.export(..., dynamo=True)`` with a ``custom_translation_table`` that maps
``aten.grid_sampler_2d`` / ``aten.grid_sampler`` to an onnxscript function emitting a
placeholder GridSample (private domain ``stn_deploy.trace``, mode / padding_mode /
align_corners as attributes). After the export the placeholder is renamed to ORT's
``com.microsoft::GridSample``, the same placeholder the TorchScript path writes, so
:func:`stn_deploy.export.lower.lower_model` (the code ``stn-deploy lower`` runs) turns it into
the chosen lowering: one rewrite path. ``F.affine_grid`` is the exporter's MatMul (the caller's
context), so ``aten.affine_grid_generator`` never reaches the translation.

The batch is dynamic through ``dynamic_shapes`` with a ``torch.export.Dim``, and the trace runs
at batch 2, so a branch on the batch size is either kept symbolic or refused by torch.export,
never silently baked at 1.

What the exporter's ``optimize()`` does here: onnxscript's optimizer folds constants, removes
dead nodes and unused initializers; it leaves nodes of unknown domains (our placeholder) alone
and is what makes adaptive pooling at a non-factor size one GatherND + ReduceMean.
The dynamo exporter's own opset is 18 and torch's down-conversion fails on this graph
(``Reshape`` / ``ReduceMean`` have no ONNX down-adapters), so this path writes opset 18 or newer.
"""

from __future__ import annotations

import io
import logging
import re
import warnings

import onnx
import torch
from torch import nn

from stn_deploy.errors import StnDeployError, one_line

TRACE_DOMAIN = "stn_deploy.trace"
MS_DOMAIN = "com.microsoft"
#: the dynamo exporter's opset (what it implements; it cannot convert this graph lower)
MIN_OPSET = 18
_MODES = ("bilinear", "nearest", "bicubic")
_PADDINGS = ("zeros", "border", "reflection")
_registered = False


def _register_schema() -> None:
    """An OpSchema for the placeholder, so onnxscript can build the node (once per process)."""
    global _registered
    if _registered:
        return
    from onnx.defs import OpSchema

    try:
        onnx.defs.get_schema("GridSample", 1, TRACE_DOMAIN)
    except Exception:
        param = OpSchema.FormalParameter
        attr = OpSchema.Attribute
        onnx.defs.register_schema(
            OpSchema(
                "GridSample",
                TRACE_DOMAIN,
                1,
                inputs=[param("X", "T"), param("grid", "T")],
                outputs=[param("Y", "T")],
                type_constraints=[
                    ("T", ["tensor(float)", "tensor(double)", "tensor(float16)"], "")
                ],
                attributes=[
                    attr("mode", OpSchema.AttrType.STRING, ""),
                    attr("padding_mode", OpSchema.AttrType.STRING, ""),
                    attr("align_corners", OpSchema.AttrType.INT, ""),
                ],
            )
        )
    _registered = True


def _translation_table() -> dict:
    import onnxscript

    _register_schema()
    trace = onnxscript.values.Opset(TRACE_DOMAIN, 1)

    def grid_sampler(input, grid, interpolation_mode: int, padding_mode: int, align_corners: bool):
        return trace.GridSample(
            input,
            grid,
            mode=_MODES[interpolation_mode],
            padding_mode=_PADDINGS[padding_mode],
            align_corners=int(align_corners),
        )

    table = {torch.ops.aten.grid_sampler_2d.default: grid_sampler}
    if hasattr(torch.ops.aten, "grid_sampler"):
        table[torch.ops.aten.grid_sampler.default] = grid_sampler
    return table


def _first_construct(exc: BaseException) -> str:
    """The innermost cause's first line: the construct torch.export could not trace."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = one_line(exc)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return text[:300]


def _placeholders_to_contrib(model: onnx.ModelProto) -> None:
    """``stn_deploy.trace::GridSample`` -> ``com.microsoft::GridSample`` (what lower reads)."""
    used = False
    for n in model.graph.node:
        if n.domain == TRACE_DOMAIN:
            n.domain, used = MS_DOMAIN, True
    keep = [i for i in model.opset_import if i.domain not in (TRACE_DOMAIN, MS_DOMAIN)]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    if used:
        model.opset_import.add(domain=MS_DOMAIN, version=1)


def dynamo_trace(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    opset: int,
    dynamic_batch: bool,
) -> onnx.ModelProto:
    """torch.onnx.export(dynamo=True) of ``model`` with the sampler placeholder (the caller
    holds the F.affine_grid / separable contexts); a one-line error when torch.export cannot
    trace it."""
    if opset < MIN_OPSET:
        raise StnDeployError(
            f"the dynamo exporter writes opset {MIN_OPSET} or newer, asked for {opset}: use "
            f"{{opset}}={MIN_OPSET} or {{exporter}}='torchscript'",
            param=("opset", "exporter"),
        )
    shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=65536)
        shapes = tuple({0: batch} for _ in example)
    names = ("torch.onnx", "torch.export", "torch.fx", "torch._dynamo", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.inference_mode(False), _quiet():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=shapes,
                custom_translation_table=_translation_table(),
                optimize=True,
                verbose=False,
                report=False,
            )
    except StnDeployError:
        raise
    except Exception as exc:
        raise StnDeployError(
            f"torch.export cannot trace the model: {_first_construct(exc)}; try "
            "{exporter}='torchscript' (and check its output: the self-check runs either way)",
            param="exporter",
        ) from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    proto = program.model_proto
    _placeholders_to_contrib(proto)
    # drop the exporter's value_info / doc strings / names that vary from run to run
    proto.producer_name, proto.producer_version = "", ""
    return onnx.load_from_string(proto.SerializeToString())


class _quiet:
    """Silence the exporter's progress prints on stdout/stderr for the export."""

    def __enter__(self):
        import contextlib

        buf = io.StringIO()
        self._ctx = [contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf)]
        for c in self._ctx:
            c.__enter__()
        return self

    def __exit__(self, *exc):
        for c in reversed(self._ctx):
            c.__exit__(*exc)
        return False
