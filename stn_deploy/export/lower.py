"""``stn-deploy lower``: rewrite the grid samplers of any existing ONNX model (onnx only, no torch).

Rewrites every ``GridSample`` (default domain, opset 16+, and ORT's ``com.microsoft``
GridSample) and every ``AffineGrid`` (opset 20) of the main graph into one chosen form and
leaves every other node alone:

* ``portable``: standard ops of opset 11 (:func:`stn_deploy.export.portable.grid_sample`); the
  image's H and W must be static (read from strict shape inference).
* ``custom``: one ``stn_deploy.GridSample`` node per sampler (attributes ``mode``,
  ``padding_mode``, ``align_corners`` with the opset-16 names) whose body is a model-local
  function made of the portable ops, one function per distinct (mode, padding, align_corners,
  H, W). With ``inline`` the bodies are written in place (``onnx.inliner``).
* ``native``: ONNX GridSample with the mode names of the target opset (``bilinear`` at 16-19,
  ``linear`` at 20+); needs opset 16+.
* ``ort-contrib``: ``com.microsoft`` GridSample (ORT at any opset).

AffineGrid (2-D or 3-D, constant ``size``) becomes, for every sampler, one MatMul of a constant
base grid ``(H*W, 3)`` (rows ``[x, y, 1]`` exactly as torch's ``affine_grid``; 3-D: ``(D*H*W,
4)``, rows ``[x, y, z, 1]``) against the transposed theta, then a Reshape to ``(N, H, W, 2)``
(``(N, D, H, W, 3)``): standard ops valid at opset 11.

5-D (volumetric) GridSample lowers to native, portable and custom (linear and nearest; cubic
is 2-D only in ONNX and torch); ort-contrib refuses it (ORT's contrib op is 4-D only). Shapes
cross chains of samplers: a sampler's output is typed ``(N, C, *grid size)`` for the planning
shape inference when inference cannot see through it (a contrib op, a Relu behind one), so
portable and custom get the static sizes of every sampler in a chain.

Opset: the output's default-domain opset is ``opset`` or the input's, at least 11 (portable,
custom) or 16 (native). When it differs from the input's, every other node whose schema
differs between the two opsets is relabelled if its signature (inputs, outputs, attributes and
their defaults) is the same in both (e.g. Relu 14 -> 6: only types were added); the others
go through ``onnx.version_converter`` with the relabelled nodes hidden from it (it has no
downgrade adapter for most type-only changes). A conversion it cannot do is a one-line error
naming the ops.

The base grid of AffineGrid is torch's bit for bit (torch's linspace rounds each point once,
as a fused multiply-add; reproduced here in float64 then rounded to float32, or, for a float64
theta, from the exact rational). A float16 or bfloat16 theta is multiplied in float32.

Types: portable and custom take float16, bfloat16, float32 and float64 samplers (float64 is
computed in float64, the half types in float32; one custom function per type); ort-contrib
refuses float64 (ONNX Runtime's com.microsoft GridSample has no float64 kernel) and X and grid
of different types; native keeps the types (ONNX Runtime runs float64 GridSample from opset 20
only). Every refusal is a one-line error raised before anything is written.

The result passes ``onnx.checker.check_model(full_check=True)`` and is deterministic.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stn_deploy.errors import StnDeployError
from stn_deploy.export import portable
from stn_deploy.export.graph import GraphBuilder, subgraphs
from stn_deploy.export.lowerings import (
    CUSTOM_DOMAIN,
    MODE_20,
    MS_DOMAIN,
    Lowering,
    SamplerSite,
    check_float_types,
    get_lowering,
)
from stn_deploy.export.metadata import write_metadata
from stn_deploy.export.onnx_file import load_onnx

_TMP_DOMAIN = "stn_deploy.lowering_placeholder"
_KEEP_DOMAIN = "stn_deploy.lowering_kept"
#: opset-20 mode names -> the opset-16 names used internally
_MODE_16 = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node #{index}"


def _all_names(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()

    def walk(graph: onnx.GraphProto) -> None:
        names.update(t.name for t in graph.initializer)
        names.update(v.name for v in (*graph.input, *graph.output, *graph.value_info))
        for n in graph.node:
            names.add(n.name)
            names.update(n.input)
            names.update(n.output)
            for sub in subgraphs(n):
                walk(sub)

    walk(model.graph)
    names.discard("")
    return names


def _is_sampler(node: onnx.NodeProto) -> bool:
    if node.op_type == "GridSample" and node.domain in ("", "ai.onnx", MS_DOMAIN):
        return True
    return node.op_type == "AffineGrid" and node.domain in ("", "ai.onnx")


def _sampler_in_subgraphs(graph: onnx.GraphProto, top: bool = True) -> str | None:
    for n in graph.node:
        if not top and _is_sampler(n):
            return n.name or n.op_type
        for sub in subgraphs(n):
            found = _sampler_in_subgraphs(sub, top=False)
            if found:
                return found
    return None


def _subgraph_inputs(nodes) -> set[str]:
    """Every input name used by the subgraphs of ``nodes`` (outer-scope references)."""
    names: set[str] = set()
    for n in nodes:
        for sub in subgraphs(n):
            names.update(v for nd in sub.node for v in nd.input)
            names.update(o.name for o in sub.output)
            names |= _subgraph_inputs(sub.node)
    return names


def _domains_used(nodes) -> set[str]:
    """The domains of ``nodes`` and of the nodes of their subgraphs."""
    domains: set[str] = set()
    for n in nodes:
        domains.add(n.domain)
        for sub in subgraphs(n):
            domains |= _domains_used(sub.node)
    return domains


# ------------------------------------------------------------------ analysis
def _shapes(
    model: onnx.ModelProto, types: dict[str, int] | None = None
) -> dict[str, list[int | None] | None]:
    """Every value's inferred shape; ``types``, when given, gets every known element type."""
    try:
        # data_prop: follow Shape -> Slice -> Concat chains, so a size built from x.shape (as
        # torch's exporters write it) still gives static H and W
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - any inference failure is the input's problem
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise StnDeployError(f"shape inference failed on the input model: {msg}") from None
    out: dict[str, list[int | None] | None] = {}
    g = inferred.graph
    for vi in (*g.input, *g.output, *g.value_info):
        t = vi.type.tensor_type
        if types is not None and t.elem_type:
            types[vi.name] = int(t.elem_type)
        if not t.HasField("shape"):
            out[vi.name] = None
            continue
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in g.initializer:
        out.setdefault(init.name, list(init.dims))
        if types is not None:
            types.setdefault(init.name, int(init.data_type))
    return out


def _propagate_sampler_shapes(
    model: onnx.ModelProto, samplers, shapes: dict, types: dict[str, int]
) -> dict:
    """Shapes through chains of samplers that shape inference cannot see through (ORT's
    com.microsoft GridSample, ops of unknown domains): a sampler's output is ``(N, C,
    *grid's spatial size)``, so every such output gets that static shape, as value_info on a
    private copy of ``model``, and inference runs again (with data propagation) until nothing
    new is learnt, once per link of the longest chain at most. Returns the new shapes."""
    work = None
    for _ in range(len(samplers)):
        added = False
        for _i, n in samplers:
            if n.op_type != "GridSample" or len(n.input) < 2:
                continue
            xs, gs = shapes.get(n.input[0]), shapes.get(n.input[1])
            if not gs or len(gs) not in (4, 5) or not all(gs[1:-1]):
                continue
            known = shapes.get(n.output[0])
            if known and len(known) == len(gs) and all(known[2:]):
                continue
            batch = gs[0] or (xs[0] if xs else None)
            c = xs[1] if xs and len(xs) == len(gs) else None
            elem = types.get(n.input[0], TensorProto.FLOAT)
            if work is None:
                work = copy.deepcopy(model)
            dims = [d if d else f"unk_{n.output[0]}_{j}" for j, d in enumerate([batch, c])]
            vi = helper.make_tensor_value_info(n.output[0], elem, [*dims, *gs[1:-1]])
            kept = [v for v in work.graph.value_info if v.name != n.output[0]]
            del work.graph.value_info[:]
            work.graph.value_info.extend([*kept, vi])
            added = True
        if not added:
            break
        shapes = _shapes(work, types)
    return shapes


def _constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    graph_inputs = {i.name for i in model.graph.input}
    for init in model.graph.initializer:
        if init.name == name and name not in graph_inputs:
            return numpy_helper.to_array(init)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and name in n.output:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name == "value_ints":
                    return np.asarray(list(a.ints), np.int64)
            return None
    return None


def _grid_sample_settings(node: onnx.NodeProto, src_opset: int, label: str) -> dict[str, Any]:
    if node.domain == MS_DOMAIN:
        names, default = portable.MODES, "bilinear"
    elif src_opset >= 20:
        names, default = tuple(MODE_20.values()), "linear"
    else:
        names, default = portable.MODES, "bilinear"
    mode = _attr(node, "mode", default.encode())
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in names:
        raise StnDeployError(
            f"{label}: mode {mode!r} is not valid here (expected one of {', '.join(names)})"
        )
    padding = _attr(node, "padding_mode", b"zeros")
    padding = padding.decode() if isinstance(padding, bytes) else str(padding)
    if padding not in portable.PADDING_MODES:
        raise StnDeployError(f"{label}: unknown padding_mode {padding!r}")
    align = int(_attr(node, "align_corners", 0))
    return {"mode": _MODE_16.get(mode, mode), "padding_mode": padding, "align_corners": bool(align)}


# ------------------------------------------------------------------- opsets
def _signature(schema: onnx.defs.OpSchema) -> tuple:
    attrs = tuple(
        sorted((k, a.default_value.SerializeToString()) for k, a in schema.attributes.items())
    )
    return (
        tuple(i.name for i in schema.inputs),
        tuple(o.name for o in schema.outputs),
        attrs,
        schema.min_input,
        schema.max_input,
        schema.min_output,
        schema.max_output,
    )


def _retarget_opset(model: onnx.ModelProto, src: int, dst: int) -> onnx.ModelProto:
    """Move the (sampler-free) default-domain part of ``model`` from opset ``src`` to ``dst``."""
    if src == dst:
        return model
    incompatible: list[str] = []

    def walk(graph: onnx.GraphProto) -> None:
        for n in graph.node:
            if n.domain in ("", "ai.onnx"):
                try:
                    old = onnx.defs.get_schema(n.op_type, src, "")
                    new = onnx.defs.get_schema(n.op_type, dst, "")
                except onnx.defs.SchemaError:
                    incompatible.append(n.op_type)
                else:
                    if old.since_version != new.since_version and _signature(old) != _signature(
                        new
                    ):
                        incompatible.append(n.op_type)
            for sub in subgraphs(n):
                walk(sub)

    walk(model.graph)
    if not incompatible:  # relabel: every op means the same at both opsets
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = dst
        return model
    # hide the nodes that mean the same at both opsets from the converter (it lacks many
    # downgrade adapters for type-only changes), convert the rest, then put them back
    kept: dict[str, onnx.NodeProto] = {}
    for j, n in enumerate(model.graph.node):
        if n.domain not in ("", "ai.onnx") or n.op_type in incompatible:
            continue
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute
        ):
            continue
        kept[f"K{j}"] = copy.deepcopy(n)
        n.CopyFrom(
            helper.make_node(
                f"K{j}", list(n.input), list(n.output), name=n.name, domain=_KEEP_DOMAIN
            )
        )
    model.opset_import.append(helper.make_opsetid(_KEEP_DOMAIN, 1))
    try:
        from onnx import version_converter

        model = version_converter.convert_version(model, dst)
        for n in model.graph.node:
            if n.domain == _KEEP_DOMAIN:
                n.CopyFrom(kept[n.op_type])
        imports = [o for o in model.opset_import if o.domain != _KEEP_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(imports)
        return model
    except Exception as exc:  # noqa: BLE001
        ops = ", ".join(sorted(set(incompatible)))
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.split("failed: ")[-1][-160:]  # drop the C++ assertion prefix
        raise StnDeployError(
            f"cannot convert the rest of the graph from opset {src} to {dst} "
            f"(ops that change: {ops}): onnx.version_converter failed: {reason}"
        ) from None


# ---------------------------------------------------------------- emitters
def _prefix(node: onnx.NodeProto, index: int) -> str:
    base = node.name or f"{node.op_type}_{index}"
    return "".join(c if c.isalnum() or c in "_./-" else "_" for c in base) + "/"


def _affine_base_grid(
    h: int, w: int, align_corners: bool, dtype: type = np.float32, d: int = 0
) -> np.ndarray:
    """torch's ``affine_grid`` base grid ``(H*W, 3)`` rows ``[x, y, 1]`` in float32 or
    float64, bit for bit; with a depth ``d`` the 3-D one, ``(D*H*W, 4)`` rows ``[x, y, z,
    1]``."""

    def linspace(n: int) -> np.ndarray:
        if n <= 1:
            return np.zeros((n,), dtype)
        # torch's linspace: start + i*step for the first half, end - (n-1-i)*step after, each
        # a fused multiply-add (one rounding). float32: the float64 product of a float32 step
        # and a small integer is exact, and so is the sum with +-1, so one cast rounds like
        # the FMA; float64: the exact rational, rounded once
        if dtype == np.float64:
            step = Fraction(2.0 / (n - 1))
            v = [float(-1 + step * i if i < n // 2 else 1 - step * (n - 1 - i)) for i in range(n)]
            v = np.asarray(v, np.float64)
        else:
            step = np.float64(np.float32(2.0 / (n - 1)))
            i = np.arange(n, dtype=np.float64)
            v = np.where(i < n // 2, -1.0 + step * i, 1.0 - step * (n - 1 - i)).astype(dtype)
        if not align_corners:
            v = (v * dtype(n - 1) / dtype(n)).astype(dtype)
        return v

    xs, ys = linspace(w), linspace(h)
    if d:
        base = np.empty((d, h, w, 4), dtype)
        base[..., 0] = xs[None, None, :]
        base[..., 1] = ys[None, :, None]
        base[..., 2] = linspace(d)[:, None, None]
        base[..., 3] = 1.0
        return base.reshape(d * h * w, 4)
    base = np.empty((h, w, 3), dtype)
    base[..., 0] = xs[None, :]
    base[..., 1] = ys[:, None]
    base[..., 2] = 1.0
    return base.reshape(h * w, 3)


def _emit_affine_grid(
    g: GraphBuilder, node, hw: tuple[int, ...], align: bool, elem: int = TensorProto.FLOAT
) -> str:
    """The base grid times the transposed theta; float16 and bfloat16 go through float32.
    ``hw`` (D, H, W): the 3-D grid, theta (N, 3, 4)."""
    *depth, h, w = hw
    dtype = np.float64 if elem == TensorProto.DOUBLE else np.float32
    base = _affine_base_grid(h, w, align, dtype, d=depth[0] if depth else 0)
    base = g.const(base, dtype, name="affine_base")
    theta = node.input[0]
    if elem not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        theta = g.node("Cast", [theta], name="theta_f", to=TensorProto.FLOAT)
    theta_t = g.node("Transpose", [theta], name="theta_t", perm=[0, 2, 1])  # (N, 3, 2)
    flat = g.node("MatMul", [base, theta_t], name="affine_grid_flat")  # (N, H*W, 2)
    shape = g.const(np.asarray([0, *hw, len(hw)], np.int64), name="affine_grid_shape")
    grid = g.node("Reshape", [flat, shape], name="affine_grid")
    if elem not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        grid = g.node("Cast", [grid], name="affine_grid_cast", to=elem)
    return grid


def _check_affine_types(label: str, elem: int) -> None:
    check_float_types(label, (elem,))


# -------------------------------------------------------------------- API
@dataclass
class LowerResult:
    """What a lowering did: ``lower_model`` returns the model, ``lower_file`` this."""

    lowering: str  #: the form written: native, portable, custom, custom-inline, ort-contrib
    rewritten: dict[str, int]  #: count per rewritten op type (AffineGrid, GridSample)
    nodes_rewritten: int
    functions: list[str]  #: model-local functions written (custom, not inlined)
    opset_before: int
    opset_after: int
    src: str | None = None
    dst: str | None = None
    bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The one-line summary the CLI prints."""
        kinds = ", ".join(f"{k} {v}" for k, v in self.rewritten.items())
        n = self.nodes_rewritten
        return (
            f"{self.src} -> {self.dst}: {n} node{'s' if n != 1 else ''} rewritten"
            f"{f' ({kinds})' if kinds else ''} as {self.lowering}, "
            f"opset {self.opset_before} -> {self.opset_after}"
        )


def _lowering_arg(lowering: str | None, sampler: str | None) -> str:
    """``lowering``, or the deprecated ``sampler=`` keyword's value."""
    if sampler is not None:
        warnings.warn("sampler= is deprecated: use lowering=", DeprecationWarning, stacklevel=3)
        if lowering is not None and lowering != sampler:
            raise StnDeployError(f"lowering={lowering!r} and sampler={sampler!r} disagree")
        lowering = sampler
    if lowering is None:
        raise StnDeployError("no lowering given")
    return lowering


def lower_model(
    model: onnx.ModelProto,
    lowering: str | None = None,
    *,
    opset: int | None = None,
    inline: bool = False,
    sampler: str | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` with its GridSample and AffineGrid nodes rewritten as ``lowering``
    (one of :func:`stn_deploy.export.lowerings.lowering_names` ``(rewrites=True)``;
    ``sampler=`` is its deprecated name).

    Raises:
        StnDeployError: an unknown lowering, a bad opset, a node that cannot be lowered (named).
    """
    return _lower(model, _lowering_arg(lowering, sampler), opset=opset, inline=inline)[0]


def _check_request(model: onnx.ModelProto, lw: Lowering, opset: int | None, inline: bool) -> int:
    """Refuse what cannot be lowered before reading any node; returns the output's opset."""
    if inline and lw.name != "custom":
        raise StnDeployError("--inline applies to --lowering custom only")
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and (
        isinstance(opset, bool) or not isinstance(opset, int) or not 1 <= opset <= newest
    ):
        raise StnDeployError(f"opset must be between 1 and {newest}, got {opset!r}")
    if lw.name == "native" and opset is not None and opset < 16:
        raise StnDeployError(
            f"native GridSample needs opset 16 or newer, asked for {opset}: use --lowering "
            "portable (standard ops, opset 11+) or ort-contrib (ONNX Runtime, any opset)"
        )
    if opset is not None and opset < lw.min_opset:
        raise StnDeployError(
            f"the {lw.name} lowering needs opset {lw.min_opset} or newer, asked for {opset}"
        )
    found = _sampler_in_subgraphs(model.graph)
    if found:
        raise StnDeployError(
            f"sampler node {found!r} sits inside a control-flow subgraph: only main-graph "
            "nodes can be lowered"
        )
    for f in model.functions:
        body = helper.make_graph(list(f.node), f.name, [], [])
        if any(_is_sampler(n) for n in f.node) or _sampler_in_subgraphs(body):
            raise StnDeployError(
                f"model-local function {f.domain}.{f.name} contains a sampler node: inline the "
                "functions first (onnx.inliner.inline_local_functions)"
            )
    return opset if opset is not None else max(_default_opset(model), lw.min_opset)


@dataclass
class _AffinePlan:
    hw: tuple[int, ...]  #: (H, W), or (D, H, W) for a 3-D AffineGrid
    align: bool
    elem: int


@dataclass
class _Plans:
    """Step 1's reading of every sampler node, by node index."""

    model: onnx.ModelProto
    lw: Lowering
    src_opset: int
    target: int
    shapes: dict = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)  # float32 where inference cannot tell
    by_index: dict[int, _AffinePlan | SamplerSite] = field(default_factory=dict)
    # a GridSample's output -> ((H, W) of its grid, C): no shape inference through contrib ops
    sampled: dict = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)


def _plan_affine_grid(p: _Plans, n: onnx.NodeProto, label: str) -> _AffinePlan:
    if len(n.input) < 2 or not n.input[1]:
        raise StnDeployError(f"{label}: missing size input")
    size = _constant_value(p.model, n.input[1])
    if size is None:  # e.g. Concat(Shape(x)[0:2], [H, W]): H, W from shape inference
        out_shape = p.shapes.get(n.output[0])
        if out_shape is None or len(out_shape) not in (4, 5) or None in out_shape[1:-1]:
            raise StnDeployError(
                f"{label}: its size input {n.input[1]!r} is not a constant and shape "
                "inference cannot tell the grid's spatial size, so the base grid cannot be "
                "precomputed"
            )
        size = np.asarray([0, 0, *out_shape[1:-1]], np.int64)
    size = np.asarray(size).reshape(-1)
    if size.size not in (4, 5):
        raise StnDeployError(
            f"{label}: only 2-D and 3-D AffineGrid (size N, C, H, W or N, C, D, H, W) can be "
            f"lowered, got size {size.tolist()}"
        )
    spatial = tuple(int(v) for v in size[2:])
    if min(spatial) < 1:
        raise StnDeployError(f"{label}: bad size {size.tolist()}")
    elem = p.types.get(n.input[0], TensorProto.FLOAT)
    _check_affine_types(label, elem)
    plan = _AffinePlan(spatial, bool(int(_attr(n, "align_corners", 0))), elem)
    known = p.shapes.get(n.output[0])
    if not known or len(known) != len(spatial) + 2 or not all(known[1:-1]):
        p.shapes[n.output[0]] = [None, *spatial, len(spatial)]  # for the samplers it feeds
    return plan


def _plan_grid_sample(p: _Plans, n: onnx.NodeProto, label: str) -> SamplerSite:
    settings = _grid_sample_settings(n, p.src_opset, label)
    xshape = p.shapes.get(n.input[0])
    gshape = p.shapes.get(n.input[1])
    rank = len(xshape) if xshape is not None else (len(gshape) if gshape is not None else 4)
    if rank not in (4, 5):
        raise StnDeployError(
            f"{label}: only 4-D (N, C, H, W) and 5-D (N, C, D, H, W) GridSample can be "
            f"lowered, its input {n.input[0]!r} has rank {rank}"
        )
    if rank == 5 and not p.lw.volumetric:
        raise StnDeployError(
            f"{label}: the {p.lw.name} lowering has no 5-D (volumetric) form (ONNX Runtime's "
            "com.microsoft GridSample takes 4-D inputs only): use --lowering native (opset 20) "
            "or portable"
        )
    if rank == 5 and settings["mode"] == "bicubic":
        raise StnDeployError(
            f"{label}: cubic mode has no 5-D (volumetric) form (ONNX and torch: linear and "
            "nearest only)"
        )
    hw = None
    if xshape is not None and all(xshape[2:]):
        hw = tuple(int(v) for v in xshape[2:])
    elif n.input[0] in p.sampled:  # no shape inference through a contrib GridSample:
        hw, c_in = p.sampled[n.input[0]]  # an earlier sampler's output is its grid's H, W
        xshape = [None, c_in, *(hw or (None,) * (rank - 2))]
    if p.lw.static_hw and hw is None:
        raise StnDeployError(
            f"{label}: the {'depth, ' if rank == 5 else ''}height and width of its input "
            f"{n.input[0]!r} are not static (shape {xshape}); the {p.lw.name} lowering "
            "needs them"
        )
    channels = int(xshape[1]) if xshape is not None and xshape[1] else None
    elems = (p.types.get(n.input[0], TensorProto.FLOAT),)
    elems += (p.types.get(n.input[1], elems[0]),)
    p.lw.check_types(label, elems)
    p.types.setdefault(n.output[0], elems[0])  # no inference through a contrib op
    out_hw = tuple(int(v) for v in gshape[1:-1]) if gshape and all(gshape[1:-1]) else None
    p.sampled[n.output[0]] = (out_hw, channels)
    return SamplerSite(
        rank=rank,
        x=n.input[0],
        grid=n.input[1],
        name=n.name,
        hw=hw,
        channels=channels,
        types=elems,
        opset=p.target,
        **settings,
    )


def _plan(p: _Plans, samplers: list[tuple[int, onnx.NodeProto]]) -> None:
    """Step 1: read every sampler node and replace it by a placeholder in a private domain."""
    for i, n in samplers:
        label = _label(n, i)
        if n.op_type == "AffineGrid":
            p.by_index[i] = _plan_affine_grid(p, n, label)
        else:
            p.by_index[i] = _plan_grid_sample(p, n, label)
        p.counts[n.op_type] += 1
        placeholder = helper.make_node(
            f"P{i}", list(n.input), list(n.output), name=n.name, domain=_TMP_DOMAIN
        )
        p.model.graph.node[i].CopyFrom(placeholder)
    if samplers:
        p.model.opset_import.append(helper.make_opsetid(_TMP_DOMAIN, 1))


def _expand(
    model: onnx.ModelProto, p: _Plans, functions: dict[tuple, onnx.FunctionProto]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], dict[str, int]]:
    """Step 3: every placeholder becomes the lowering's nodes; returns the new node list, the
    new initializers and the domains the sampler nodes use."""
    taken = _all_names(model)
    new_nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    domains: dict[str, int] = {}
    by_placeholder = {f"P{i}": i for i in p.by_index}
    for n in model.graph.node:
        i = by_placeholder.get(n.op_type) if n.domain == _TMP_DOMAIN else None
        if i is None:
            new_nodes.append(n)
            continue
        plan = p.by_index[i]
        g = GraphBuilder(p.target, prefix=_prefix(n, i), taken=taken)
        if isinstance(plan, _AffinePlan):
            y = _emit_affine_grid(g, n, plan.hw, plan.align, plan.elem)
        else:
            if functions:
                plan = replace(plan, function=functions[plan.function_key].name)
            y = p.lw.emit(g, plan)
            if p.lw.domain:
                domains[p.lw.domain] = 1
        g.rename(y, n.output[0])
        new_nodes.extend(g.nodes)
        initializers.extend(g.initializers)
        taken |= g._taken
    return new_nodes, initializers, domains


def _drop_dead(
    model: onnx.ModelProto, new_nodes: list[onnx.NodeProto], samplers_before
) -> set[str]:
    """What only fed the rewritten nodes (e.g. AffineGrid's size, Concat(Shape(x), [H, W])) is
    dead now: drop it from ``new_nodes``, walking back from their former inputs; nothing else
    is touched. Returns the dead value names."""
    graph_outputs = {o.name for o in model.graph.output}
    seeds = {v for n in samplers_before for v in n.input if v}
    while True:
        used = {v for nd in new_nodes for v in nd.input} | _subgraph_inputs(new_nodes)
        used |= graph_outputs
        newly_dead = [
            nd
            for nd in new_nodes
            if set(nd.output) & seeds and not any(o in used for o in nd.output)
        ]
        if not newly_dead:
            break
        for nd in newly_dead:
            new_nodes.remove(nd)
            seeds |= {v for v in nd.input if v}
    graph_inputs = {i.name for i in model.graph.input}
    return {v for v in seeds if v not in used and v not in graph_inputs}


def _set_imports(
    model: onnx.ModelProto,
    new_nodes: list[onnx.NodeProto],
    function_protos: list[onnx.FunctionProto],
    domains: dict[str, int],
) -> None:
    """Drop the placeholder domain, and com.microsoft when no node uses it any more; add the
    domains the new sampler nodes use."""
    in_use = _domains_used(new_nodes) | _domains_used(
        [nd for f in (*model.functions, *function_protos) for nd in f.node]
    )
    imports = [
        o
        for o in model.opset_import
        if o.domain != _TMP_DOMAIN
        and not (o.domain == MS_DOMAIN and MS_DOMAIN not in in_use and MS_DOMAIN not in domains)
    ]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    existing = {o.domain for o in model.opset_import}
    for dom, ver in sorted(domains.items()):
        if dom not in existing:
            model.opset_import.append(helper.make_opsetid(dom, ver))


def _rebuild(model: onnx.ModelProto, p: _Plans, samplers_before) -> list[onnx.FunctionProto]:
    """Steps 3 and 4: expand the placeholders, drop what is dead, fix the imports; returns
    the model-local functions added."""
    sites = [s for s in p.by_index.values() if isinstance(s, SamplerSite)]
    functions = p.lw.functions(sites) if p.lw.functions is not None and sites else {}
    function_protos = list(functions.values())
    new_nodes, initializers, domains = _expand(model, p, functions)
    dead = _drop_dead(model, new_nodes, samplers_before)
    keep_init = [t for t in model.graph.initializer if t.name not in dead]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep_init)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(initializers)
    _set_imports(model, new_nodes, function_protos, domains)
    model.functions.extend(function_protos)
    # the stale value_info of the rewritten outputs may carry old types; drop only entries of
    # names that no longer exist
    live = _all_names(model)
    keep = [v for v in model.graph.value_info if v.name in live]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return function_protos


def _finish(model: onnx.ModelProto, lowering: str, target: int, inline: bool, functions):
    """Inline the custom bodies when asked, set the IR version and metadata, and check."""
    if inline and functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
        del model.functions[:]
        imports = [o for o in model.opset_import if o.domain != CUSTOM_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(imports)
    need_ir = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if model.functions:
        need_ir = max(need_ir, 8)
    model.ir_version = max(int(model.ir_version), need_ir)
    from stn_deploy import __version__

    write_metadata(model, {"lowering": lowering, "opset": str(target), "version": __version__})
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StnDeployError(f"the lowered model fails onnx.checker: {msg}") from None
    return model


def _lower(
    model: onnx.ModelProto, lowering: str, *, opset: int | None, inline: bool
) -> tuple[onnx.ModelProto, LowerResult]:
    lw = get_lowering(lowering, rewrites=True)
    target = _check_request(model, lw, opset, inline)
    src_opset = _default_opset(model)
    model = copy.deepcopy(model)
    samplers = [(i, n) for i, n in enumerate(model.graph.node) if _is_sampler(n)]
    samplers_before = [copy.deepcopy(n) for _, n in samplers]
    p = _Plans(model, lw, src_opset, target)
    if samplers:
        p.shapes = _shapes(model, p.types)
        p.shapes = _propagate_sampler_shapes(model, samplers, p.shapes, p.types)
    _plan(p, samplers)  # 1. read the samplers, leave placeholders
    if target != src_opset:  # 2. move the rest of the graph to the target opset
        model = _retarget_opset(model, src_opset, target)
    functions = _rebuild(model, p, samplers_before)  # 3. expand the placeholders
    name = "custom-inline" if (lw.name == "custom" and inline) else lw.name
    model = _finish(model, name, target, inline, functions)
    result = LowerResult(
        lowering=name,
        rewritten=dict(sorted(p.counts.items())),
        nodes_rewritten=sum(p.counts.values()),
        functions=[f.name for f in functions] if not inline else [],
        opset_before=src_opset,
        opset_after=target,
    )
    return model, result


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file, or raise a one-line :class:`StnDeployError`
    (:func:`stn_deploy.export.onnx_file.load_onnx` with ``check=True``)."""
    return load_onnx(path, check=True)


def lower_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    lowering: str | None = None,
    *,
    opset: int | None = None,
    inline: bool = False,
    sampler: str | None = None,
) -> LowerResult:
    """Lower the ONNX file ``src`` into ``dst`` (written atomically); ``sampler=`` is the
    deprecated name of ``lowering``."""
    from stn_deploy.io.atomic import write_bytes_locked
    from stn_deploy.io.paths import check_not_source

    lowering = _lowering_arg(lowering, sampler)
    get_lowering(lowering, rewrites=True)
    check_not_source(src, dst)
    model = load_model(src)
    lowered, result = _lower(model, lowering, opset=opset, inline=inline)
    data = lowered.SerializeToString(deterministic=True)
    write_bytes_locked(dst, data)  # one writer of dst at a time, as export and quantize
    result.src, result.dst, result.bytes = str(src), str(dst), len(data)
    return result


def format_summary(result: LowerResult) -> str:
    """The one-line summary the CLI prints (:meth:`LowerResult.describe`)."""
    return result.describe()
