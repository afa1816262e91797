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
The dynamo exporter's own opset is 18 (torch's own down-conversion fails on this graph, and
onnx's C++ version converter has no adapter for ``Pad`` 18 -> 17 or ``Relu`` 14 -> 13). Opsets
16 and 17 are reached by :mod:`stn_deploy.export.downgrade`, which rewrites the few ops that
changed in between; lower opsets are the TorchScript exporter's.

torchlib's op registry, which ``torch.onnx.export`` rebuilds on every call (about a third of
an export's time), is built once per process and opset here and copied for each export.
"""

from __future__ import annotations

import ast
import contextlib
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
#: the dynamo exporter's own opset (what torchlib implements)
TRACE_OPSET = 18
#: the lowest opset the trace is brought down to (stn_deploy.export.downgrade)
MIN_OPSET = 16
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

    table = {
        torch.ops.aten.grid_sampler_2d.default: grid_sampler,
        torch.ops.aten.grid_sampler_3d.default: grid_sampler,
    }
    if hasattr(torch.ops.aten, "grid_sampler"):
        table[torch.ops.aten.grid_sampler.default] = grid_sampler
    return table


_REGISTRIES: dict[int, object] = {}


@contextlib.contextmanager
def _cached_registry():
    """While exporting: ``ONNXRegistry.from_torchlib`` answers with a copy of the registry built
    once per opset in this process (the same torchlib, so the same content); the exporter's
    ``register_op`` then adds our translations to the copy only."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:  # another torch layout: export uncached
        yield
        return
    cls = _registration.ONNXRegistry
    original = cls.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod):
        yield
        return

    def from_torchlib(klass, opset_version=TRACE_OPSET):
        if opset_version not in _REGISTRIES:
            _REGISTRIES[opset_version] = original.__func__(klass, opset_version=opset_version)
        cached = _REGISTRIES[opset_version]
        copy = klass()
        copy._opset_version = cached._opset_version
        copy.functions = {k: list(v) for k, v in cached.functions.items()}
        return copy

    cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        cls.from_torchlib = original


def _first_construct(exc: BaseException) -> str:
    """The innermost cause's first line: the construct torch.export could not trace."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = one_line(exc)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return text[:300]


def _unqualified(scope: str) -> str:
    """``stn.localization.0`` -> ``localization.0``: the last non-numeric atom and what
    follows it (the TorchScript exporter's node-scope convention)."""
    atoms = scope.split(".")
    i = len(atoms) - 1
    while i > 0 and atoms[i].isdigit():
        i -= 1
    return ".".join(atoms[i:])


def _scope_names(graph: onnx.GraphProto) -> None:
    """Nodes named after the module that made them, as TorchScript names them
    (``/stn/fc_loc/fc_loc.2/Gemm``), instead of ``node_linear_1``; and the exporter's per-node
    metadata (stack traces with this machine's file paths, fx node text) dropped, so the file
    is the same wherever it is exported and carries no local paths."""
    taken: dict[str, int] = {}
    for node in graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        scopes = props.get("pkg.torch.onnx.name_scopes")
        try:
            parts = [_unqualified(x) for x in ast.literal_eval(scopes)[1:-1]] if scopes else []
        except (ValueError, SyntaxError):
            parts = []
        base = "/" + "/".join([*parts, node.op_type])
        count = taken.get(base, 0)
        taken[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"
        del node.metadata_props[:]
    _output_names_after_nodes(graph)


def _output_names_after_nodes(graph: onnx.GraphProto) -> None:
    """Intermediate tensors named ``<node name>_output_<i>`` (TorchScript's convention), so a
    tensor says which layer made it; graph inputs, outputs and initializers keep theirs."""
    fixed = {v.name for v in (*graph.input, *graph.output)} | {i.name for i in graph.initializer}
    renamed: dict[str, str] = {}
    for node in graph.node:
        for k, out in enumerate(node.output):
            if out and out not in fixed:
                renamed[out] = f"{node.name}_output_{k}"
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    for vi in graph.value_info:
        vi.name = renamed.get(vi.name, vi.name)


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
    holds the F.affine_grid / separable contexts), at ``opset``; a one-line error when
    torch.export cannot trace it or the file cannot be brought to ``opset``."""
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
        with warnings.catch_warnings(), torch.inference_mode(False), _quiet(), _cached_registry():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                opset_version=max(opset, TRACE_OPSET),
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
    _scope_names(proto.graph)
    # drop the exporter's value_info / doc strings / names that vary from run to run
    proto.producer_name, proto.producer_version = "", ""
    proto = onnx.load_from_string(proto.SerializeToString())
    return _down_converted(proto, opset) if opset < TRACE_OPSET else proto


def _down_converted(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The opset-18 trace at ``opset`` (16 or 17): :func:`stn_deploy.export.downgrade.downgrade`,
    op by op; one line naming the first op that has no form there."""
    from stn_deploy.export.downgrade import downgrade

    return downgrade(proto, opset)


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
