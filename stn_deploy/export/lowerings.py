"""The grid-sample lowerings: one registered function per form (numpy + onnx, no torch).

Each form is a function ``(g, site) -> output name`` registered with :func:`register`, as
onnxscript's torch_lib registers one function per aten op: its docstring states the node(s) it
writes, the attribute handling shared by the one-node forms lives in :func:`_sampler_node`, and
what a form cannot do is a one-line :class:`StnDeployError` (:meth:`Lowering.check_types`) or
``NotImplementedError`` before anything is written. The forms' bodies stay where they are
(:mod:`stn_deploy.export.portable` for the standard-op sampler); this module only says how each
one reaches the file.

Everything that offers a choice of lowering reads this registry: the CLI's choices
(``stn-deploy export``/``lower``), ``--lowering auto``'s candidates
(:func:`stn_deploy.pytorch.exporter.choose_lowering`) and the target profiles
(:mod:`stn_deploy.export.targets`).

    >>> lowering_names()
    ('native', 'portable', 'custom', 'ort-contrib', 'separable')
    >>> lowering_names(rewrites=True)
    ('native', 'portable', 'custom', 'ort-contrib')
    >>> get_lowering("native").min_opset
    16
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import TensorProto, helper

from stn_deploy.errors import StnDeployError
from stn_deploy.export import portable
from stn_deploy.export.graph import GraphBuilder

CUSTOM_DOMAIN = "stn_deploy"
MS_DOMAIN = "com.microsoft"
#: opset-16 mode names -> the opset-20 names
MODE_20 = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest"}


@dataclass(frozen=True)
class SamplerSite:
    """One GridSample node to rewrite, as the lowering pass read it."""

    x: str  #: image input (N, C, H, W), or (N, C, D, H, W) for a volumetric sampler
    grid: str  #: grid input (N, H_out, W_out, 2), or (N, D_out, H_out, W_out, 3)
    name: str  #: the node's name ("" when it had none)
    mode: str  #: opset-16 name: bilinear, nearest, bicubic
    padding_mode: str
    align_corners: bool
    hw: tuple[int, ...] | None  #: the image's static (H, W), or (D, H, W) (5-D), when known
    channels: int | None
    types: tuple[int, int]  #: element types of x and grid (TensorProto enums)
    opset: int  #: default-domain opset of the output
    function: str | None = None  #: the custom lowering's function name for this site
    rank: int = 4  #: 4, or 5 for a volumetric (N, C, D, H, W) sampler

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "padding_mode": self.padding_mode,
            "align_corners": self.align_corners,
        }

    @property
    def function_key(self) -> tuple:
        """What tells two custom-function bodies apart."""
        return (self.mode, self.padding_mode, self.align_corners, tuple(self.hw), *self.types)


Emit = Callable[[GraphBuilder, SamplerSite], str]


@dataclass(frozen=True)
class Lowering:
    """One grid-sample form and what it needs."""

    name: str
    emit: Emit = field(repr=False)
    #: the lowest default-domain opset the form is valid at
    min_opset: int
    #: the domain of the one sampler node it writes ("" for standard ops)
    domain: str = ""
    #: needs the image's static H and W (the standard-op body is unrolled for them)
    static_hw: bool = False
    #: can write 5-D (volumetric) samplers
    volumetric: bool = True
    #: ``stn-deploy lower`` can write it in place of any GridSample node
    rewrites: bool = True
    #: a candidate of ``--lowering auto``
    auto: bool = True
    #: model-local function bodies for a model's sites (the custom form), or None
    functions: Callable[[list[SamplerSite]], dict[tuple, onnx.FunctionProto]] | None = field(
        default=None, repr=False
    )
    #: extra type refusals: ``(label, types) -> None`` raising StnDeployError
    type_check: Callable[[str, tuple[int, ...]], None] | None = field(default=None, repr=False)
    doc: str = ""

    def check_types(self, label: str, types: tuple[int, ...]) -> None:
        """Refuse, before anything is written, a sampler whose types this form cannot take."""
        if self.static_hw:  # the standard-op body: float types only
            check_float_types(label, types)
        if self.type_check is not None:
            self.type_check(label, types)


LOWERINGS: dict[str, Lowering] = {}


def register(
    name: str,
    *,
    min_opset: int,
    domain: str = "",
    static_hw: bool = False,
    rewrites: bool = True,
    auto: bool = True,
    functions=None,
    type_check=None,
    volumetric: bool = True,
) -> Callable[[Emit], Emit]:
    """Decorator: register ``fn`` as the lowering ``name`` (its docstring's first line is the
    form's one-line description, e.g. for the CLI help)."""

    def deco(fn: Emit) -> Emit:
        if name in LOWERINGS:
            raise ValueError(f"lowering {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        LOWERINGS[name] = Lowering(
            name,
            fn,
            min_opset=min_opset,
            domain=domain,
            static_hw=static_hw,
            volumetric=volumetric,
            rewrites=rewrites,
            auto=auto,
            functions=functions,
            type_check=type_check,
            doc=doc[0] if doc else "",
        )
        return fn

    return deco


def lowering_names(*, rewrites: bool | None = None, auto: bool | None = None) -> tuple[str, ...]:
    """Registered lowering names in registration order, optionally only those that
    ``stn-deploy lower`` can write (``rewrites``) or that ``auto`` tries."""
    return tuple(
        lw.name
        for lw in LOWERINGS.values()
        if (rewrites is None or lw.rewrites == rewrites) and (auto is None or lw.auto == auto)
    )


def get_lowering(name: str, *, rewrites: bool = False) -> Lowering:
    """The registered lowering ``name``, or a one-line error listing the choices
    (with ``rewrites``, only those ``stn-deploy lower`` can write)."""
    lw = LOWERINGS.get(name)
    if lw is None or (rewrites and not lw.rewrites):
        names = lowering_names(rewrites=True if rewrites else None)
        raise StnDeployError(f"unknown lowering {name!r}: expected one of {', '.join(names)}")
    return lw


# ------------------------------------------------------------ shared helpers
def type_name(elem: int) -> str:
    return TensorProto.DataType.Name(elem).lower() if elem else "unknown"


def check_float_types(label: str, types: Iterable[int]) -> None:
    types = tuple(types)
    if any(e not in portable.FLOAT_TYPES for e in types):
        names = "/".join(type_name(e) for e in types)
        raise StnDeployError(
            f"{label}: {names} inputs cannot be lowered (float16, bfloat16, float32 or float64)"
        )


def _sampler_node(g: GraphBuilder, site: SamplerSite, op: str, domain: str, mode: str) -> str:
    """The one-node forms: ``op(X, grid)`` with mode, padding_mode and align_corners, keeping
    the original node's name."""
    y = g.node(
        op,
        [site.x, site.grid],
        name="y",
        domain=domain,
        mode=mode,
        align_corners=int(site.align_corners),
        padding_mode=site.padding_mode,
    )
    g.nodes[-1].name = site.name or g.nodes[-1].name
    return y


# ------------------------------------------------------------------- forms
@register("native", min_opset=16)
def native(g: GraphBuilder, site: SamplerSite) -> str:
    """ONNX GridSample (opset 16+; mode names bilinear/bicubic at 16-19, linear/cubic at 20+)."""
    mode = MODE_20[site.mode] if site.opset >= 20 else site.mode
    return _sampler_node(g, site, "GridSample", "", mode)


@register("portable", min_opset=11, static_hw=True)
def portable_form(g: GraphBuilder, site: SamplerSite) -> str:
    """Standard ops of opset 11, no sampler op (stn_deploy.export.portable.grid_sample)."""
    return portable.grid_sample(
        g,
        site.x,
        site.grid,
        in_hw=site.hw,
        channels=site.channels,
        dtype=site.types[0],
        grid_dtype=site.types[1],
        **site.settings,
    )


def custom_function(
    name: str,
    settings: dict[str, Any],
    hw: tuple[int, ...],
    opset: int,
    types: tuple[int, int] = (TensorProto.FLOAT, TensorProto.FLOAT),
) -> onnx.FunctionProto:
    """The model-local ``stn_deploy.GridSample`` function: the portable ops as its body."""
    g = GraphBuilder(opset, constants="node", taken=("X", "grid", "Y"))
    y = portable.grid_sample(
        g, "X", "grid", in_hw=hw, dtype=types[0], grid_dtype=types[1], **settings
    )
    g.rename(y, "Y")
    return helper.make_function(
        CUSTOM_DOMAIN,
        name,
        ["X", "grid"],
        ["Y"],
        list(g.nodes),
        [helper.make_opsetid("", opset)],
        attributes=["align_corners", "mode", "padding_mode"],
        doc_string=(
            f"torch grid_sample mode={settings['mode']} padding_mode={settings['padding_mode']} "
            f"align_corners={settings['align_corners']} on a {'x'.join(map(str, hw))} "
            f"{'volume' if len(hw) == 3 else 'image'} "
            "(stn-deploy portable body)"
        ),
    )


def _custom_functions(sites: list[SamplerSite]) -> dict[tuple, onnx.FunctionProto]:
    """One function per distinct (mode, padding, align_corners, H, W (D, H, W), types), in
    sorted order: ``GridSample`` when there is one, else named after its settings."""
    keys = sorted({s.function_key for s in sites})
    opset = sites[0].opset if sites else 0
    out: dict[tuple, onnx.FunctionProto] = {}
    for key in keys:
        name = "GridSample"
        if len(keys) > 1:
            size = "x".join(map(str, key[3]))
            name = f"GridSample_{key[0]}_{key[1]}_ac{int(key[2])}_{size}"
            if key[4:] != (TensorProto.FLOAT, TensorProto.FLOAT):  # one body per type
                name += "_" + "_".join(type_name(e) for e in sorted(set(key[4:])))
        settings = {"mode": key[0], "padding_mode": key[1], "align_corners": key[2]}
        out[key] = custom_function(name, settings, key[3], opset, key[4:])
    return out


@register("custom", min_opset=11, domain=CUSTOM_DOMAIN, static_hw=True, functions=_custom_functions)
def custom(g: GraphBuilder, site: SamplerSite) -> str:
    """stn_deploy.GridSample with a model-local function body of the portable ops."""
    if site.function is None:
        raise NotImplementedError("the custom lowering needs the site's function name")
    return _sampler_node(g, site, site.function, CUSTOM_DOMAIN, site.mode)


def _ort_contrib_types(label: str, types: tuple[int, ...]) -> None:
    if TensorProto.DOUBLE in types:
        raise StnDeployError(
            f"{label}: ONNX Runtime's com.microsoft GridSample has no float64 kernel; lower "
            "it with --lowering native (opset 20) or portable"
        )
    if len(set(types)) > 1:
        names = "/".join(type_name(e) for e in types)
        raise StnDeployError(
            f"{label}: com.microsoft GridSample takes X and grid of one type, got {names}"
        )


@register(
    "ort-contrib", min_opset=1, domain=MS_DOMAIN, type_check=_ort_contrib_types, volumetric=False
)
def ort_contrib(g: GraphBuilder, site: SamplerSite) -> str:
    """com.microsoft GridSample (ONNX Runtime's contrib op, any opset)."""
    return _sampler_node(g, site, "GridSample", MS_DOMAIN, site.mode)


@register("separable", min_opset=11, rewrites=False, auto=False)
def separable(g: GraphBuilder, site: SamplerSite) -> str:
    """Two MatMuls Wy·X·Wxᵀ (attention STNs, bilinear, zeros), written by the exporter's trace."""
    raise NotImplementedError(
        "the separable form is written while tracing an attention STN (stn-deploy export); "
        "a GridSample node in a file cannot be rewritten into it"
    )
