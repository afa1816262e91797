"""Named model configurations: ``build_model("mnist-affine", in_size=42)``.

Every zoo model is an :class:`STNClassifier`. Its arguments (all JSON-serialisable) are what
a checkpoint's config stores to rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models.classifier import STNClassifier, flat_features, tutorial_localization
from stn_deploy.pytorch.models.paper import LOC_HIDDEN, PaperClassifier, paper_localization
from stn_deploy.pytorch.models.sampler import SamplerConfig
from stn_deploy.pytorch.models.stn import SpatialTransformer, STNParallel, STNSeries
from stn_deploy.pytorch.models.transforms import make_transform


def _stn(transform: str, in_shape, sampler: SamplerConfig, **transform_args) -> SpatialTransformer:
    loc = tutorial_localization(in_shape[0])
    return SpatialTransformer(
        loc, flat_features(loc, in_shape), make_transform(transform, **transform_args), sampler
    )


def _sampler(args: dict, out_size) -> SamplerConfig:
    return SamplerConfig(
        mode=args["mode"],
        padding_mode=args["padding_mode"],
        align_corners=args["align_corners"],
        out_size=None if out_size is None else (out_size, out_size),
    )


def _single(transform: str, **extra) -> Callable[[dict], nn.Module]:
    def build(args: dict) -> nn.Module:
        in_shape = (args["in_channels"], args["in_size"], args["in_size"])
        stn = _stn(
            transform, in_shape, _sampler(args, args["out_size"]), **{k: args[k] for k in extra}
        )
        return STNClassifier(stn, in_shape, args["num_classes"], args["dropout"])

    return build


def _series(args: dict) -> nn.Module:
    in_shape = (args["in_channels"], args["in_size"], args["in_size"])
    first = _stn("affine", in_shape, _sampler(args, None))
    second = _stn("affine", in_shape, _sampler(args, args["out_size"]))
    return STNClassifier(STNSeries([first, second]), in_shape, args["num_classes"], args["dropout"])


def _parallel(args: dict) -> nn.Module:
    in_shape = (args["in_channels"], args["in_size"], args["in_size"])
    stns = [_stn("affine", in_shape, _sampler(args, args["out_size"])) for _ in range(2)]
    return STNClassifier(STNParallel(stns), in_shape, args["num_classes"], args["dropout"])


def _cnn(args: dict) -> nn.Module:
    in_shape = (args["in_channels"], args["in_size"], args["in_size"])
    return STNClassifier(None, in_shape, args["num_classes"], args["dropout"])


def _paper_single(transform: str, **extra) -> Callable[[dict], nn.Module]:
    """The paper's ST-CNN: its localisation net and baseline CNN around ``transform``."""

    def build(args: dict) -> nn.Module:
        in_shape = (args["in_channels"], args["in_size"], args["in_size"])
        pool = args["loc_pool"] or (2 if args["in_size"] > 28 else 1)
        loc = paper_localization(in_shape[0], pool)
        stn = SpatialTransformer(
            loc,
            flat_features(loc, in_shape),
            make_transform(transform, **{k: args[k] for k in extra}),
            _sampler(args, args["out_size"]),
            hidden=LOC_HIDDEN,
        )
        return PaperClassifier(stn, in_shape, args["num_classes"], args["dropout"])

    return build


def _paper_cnn(args: dict) -> nn.Module:
    in_shape = (args["in_channels"], args["in_size"], args["in_size"])
    return PaperClassifier(None, in_shape, args["num_classes"], args["dropout"])


_PAPER = (("dropout", 0.0),)
_PAPER_ST = (*_PAPER, ("loc_pool", None))


COMMON_ARGS = {
    "in_channels": 1,
    "in_size": 28,
    "out_size": 28,
    "num_classes": 10,
    "dropout": 0.5,
    "mode": "bilinear",
    "padding_mode": "zeros",
    "align_corners": False,
}


@dataclass(frozen=True)
class ZooEntry:
    name: str
    transform: str
    description: str
    build: Callable[[dict], nn.Module]
    extra_args: tuple[tuple[str, object], ...] = ()

    def defaults(self) -> dict:
        args = dict(COMMON_ARGS)
        args.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.extra_args})
        if self.transform == "none":
            for key in ("out_size", "mode", "padding_mode", "align_corners"):
                args.pop(key)
        return args


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "mnist-affine",
            "affine",
            "the PyTorch tutorial's STN: affine, 6 params",
            _single("affine"),
        ),
        ZooEntry(
            "mnist-attention",
            "attention",
            "scale + translation STN, 3 params",
            _single("attention"),
        ),
        ZooEntry(
            "mnist-projective", "projective", "homography STN, 8 params", _single("projective")
        ),
        ZooEntry(
            "mnist-tps",
            "tps",
            "thin-plate-spline STN, 4x4 control points",
            _single("tps", grid_size=None),
            (("grid_size", (4, 4)),),
        ),
        ZooEntry("mnist-affine-series", "affine", "two affine STNs in series", _series),
        ZooEntry(
            "mnist-affine-parallel",
            "affine",
            "two affine STNs in parallel, channels concatenated",
            _parallel,
        ),
        ZooEntry("mnist-cnn", "none", "CNN baseline without an STN (the paper's comparison)", _cnn),
        ZooEntry(
            "paper-cnn",
            "none",
            "the paper's distorted-MNIST CNN: conv9-32, pool, conv7-32, pool, fc",
            _paper_cnn,
            _PAPER,
        ),
        ZooEntry(
            "paper-st-cnn",
            "affine",
            "the paper's ST-CNN (Aff): conv localisation net, 28x28 output, paper CNN",
            _paper_single("affine"),
            _PAPER_ST,
        ),
        ZooEntry(
            "paper-st-cnn-projective",
            "projective",
            "the paper's ST-CNN (Proj): homography, 8 params",
            _paper_single("projective"),
            _PAPER_ST,
        ),
        ZooEntry(
            "paper-st-cnn-tps",
            "tps",
            "the paper's ST-CNN (TPS): thin-plate spline, 3x3 control points",
            _paper_single("tps", grid_size=None),
            (*_PAPER_ST, ("grid_size", (3, 3))),
        ),
    ]
}


def zoo_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise StnDeployError(f"unknown model {name!r}: expected one of {', '.join(ZOO)}")
    return ZOO[name]


def resolve_args(name: str, **overrides) -> dict:
    """The zoo model's full argument dict: defaults updated with ``overrides`` (None values ignored)."""
    entry = zoo_entry(name)
    args = entry.defaults()
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in args:
            raise StnDeployError(
                f"model {name!r} has no argument {key!r}: it takes {', '.join(sorted(args))}"
            )
        args[key] = list(value) if isinstance(value, tuple) else value
    return args


def build_model(name: str, **overrides) -> STNClassifier:
    """Build zoo model ``name`` with its default arguments updated by ``overrides``.

    Example:
        >>> build_model("mnist-affine", in_size=42).stn.sampler.out_size
        (28, 28)
    """
    args = resolve_args(name, **overrides)
    return zoo_entry(name).build(args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
