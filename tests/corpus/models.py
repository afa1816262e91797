"""Third-party-style warping models, built the way users build them (issue 13).

Each factory takes no arguments and returns an ``nn.Module`` in eval mode that maps one small
image batch ``(N, C, H, W)`` to a tensor (or a tuple of tensors). :data:`CORPUS` lists them with
their input shape, so tests and ``benchmarks/export_coverage.py`` load each one as a user would:
``load_model("tests/corpus/models.py:<factory>", input_shape=shape)``.

Two families:

- kornia (``kornia.geometry.transform`` and ``kornia.augmentation``), the library users reach
  for when they do not write ``affine_grid``/``grid_sample`` themselves. A kornia factory whose
  function is missing from the installed kornia raises ``ImportError`` with the reason;
  :func:`available` tells which ones load.
- hand-written STNs with the shapes that trip exporters: ``adaptive_avg_pool2d`` at a size that
  does not divide the input (7 -> 3), a tuple output, two samplers, an output size other than
  the input's, and every mode x padding pair of ``grid_sample`` on a fixed affine warp.

Weights are seeded, so every call of a factory builds the same model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

FILE = Path(__file__).resolve()


class Entry(NamedTuple):
    # a NamedTuple, not a dataclass: load_model imports a factory file without registering it
    # in sys.modules, where dataclasses with string annotations fail (see test_corpus)
    name: str  # the corpus name (also the factory's name with '-' for '_')
    factory: str  # the callable in this file
    input_shape: tuple[int, ...]  # (C, H, W), or (C, D, H, W) for a volume
    family: str  # "kornia" or "hand-written"
    what: str

    @property
    def ref(self) -> str:
        """The factory reference ``load_model`` takes: ``<this file>:<factory>``."""
        return f"{FILE}:{self.factory}"


def _kornia_transform(name: str):
    try:
        import kornia.geometry.transform as kt
    except ImportError as exc:  # pragma: no cover - kornia is in the dev extra
        raise ImportError(f"kornia is not installed ({exc})") from exc
    fn = getattr(kt, name, None)
    if fn is None:
        import kornia

        raise ImportError(f"kornia {kornia.__version__} has no geometry.transform.{name}")
    return fn


class _LocNet(nn.Module):
    """A small localisation net: conv -> pool -> linear, last layer starting at ``bias``. The
    pool's size divides the features' (``hw / 4``), as exporters need for adaptive pooling."""

    def __init__(self, in_ch: int, hw: int, n_out: int, bias: list[float]) -> None:
        super().__init__()
        side = hw // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(side)
        )
        self.fc = nn.Linear(4 * side * side, n_out)
        with torch.no_grad():
            self.fc.weight.mul_(0.05)
            self.fc.bias.copy_(torch.tensor(bias))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def _rotation(deg: float, s: float = 0.9, tx: float = 0.1, ty: float = -0.05) -> list[float]:
    a = math.radians(deg)
    return [s * math.cos(a), -s * math.sin(a), tx, s * math.sin(a), s * math.cos(a), ty]


# ---------------------------------------------------------------------------------- kornia


class KorniaWarpAffine(nn.Module):
    """An STN whose sampler is ``kornia.geometry.transform.warp_affine`` (pixel-space M)."""

    def __init__(self) -> None:
        super().__init__()
        self.warp = _kornia_transform("warp_affine")
        # pixel coordinates on 32x32: rotate ~20 degrees about the centre, then shift
        a = math.radians(20.0)
        c, s = math.cos(a), math.sin(a)
        cx = cy = 15.5
        m = [c, -s, cx - c * cx + s * cy + 1.5, s, c, cy - s * cx - c * cy - 2.0]
        self.loc = _LocNet(3, 32, 6, m)

    def forward(self, x):
        m = self.loc(x).view(-1, 2, 3)
        return self.warp(x, m, dsize=(32, 32))


class KorniaWarpPerspective(nn.Module):
    """An STN predicting a homography, sampled by ``kornia...warp_perspective``."""

    def __init__(self) -> None:
        super().__init__()
        self.warp = _kornia_transform("warp_perspective")
        h = [1.05, 0.08, -1.0, -0.05, 0.95, 1.2, 0.002, -0.001, 1.0]
        self.loc = _LocNet(3, 32, 9, h)

    def forward(self, x):
        h = self.loc(x).view(-1, 3, 3)
        return self.warp(x, h, dsize=(32, 32), align_corners=True)


class KorniaRotateScaleTranslate(nn.Module):
    """Chained ``kornia`` rotate -> scale -> translate with fixed parameters (three samplers)."""

    def __init__(self) -> None:
        super().__init__()
        self.rotate = _kornia_transform("rotate")
        self.scale = _kornia_transform("scale")
        self.translate = _kornia_transform("translate")
        self.register_buffer("angle", torch.tensor([25.0]))
        self.register_buffer("factor", torch.tensor([[0.8, 1.1]]))
        self.register_buffer("shift", torch.tensor([[2.5, -1.5]]))

    def forward(self, x):
        n = x.shape[0]
        y = self.rotate(x, self.angle.expand(n))
        y = self.scale(y, self.factor.expand(n, 2))
        return self.translate(y, self.shift.expand(n, 2))


class KorniaRemap(nn.Module):
    """A fixed lens-like distortion map through ``kornia...remap`` (pixel maps)."""

    def __init__(self) -> None:
        super().__init__()
        self.remap = _kornia_transform("remap")
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        r = ((xs - 15.5) ** 2 + (ys - 15.5) ** 2).sqrt() / 22.0
        k = 1.0 + 0.25 * r**2
        self.register_buffer(
            "map_x", (15.5 + (xs - 15.5) * k + 0.7 * torch.sin(ys / 3)).unsqueeze(0)
        )
        self.register_buffer("map_y", (15.5 + (ys - 15.5) * k).unsqueeze(0))

    def forward(self, x):
        n = x.shape[0]
        return self.remap(
            x, self.map_x.expand(n, -1, -1), self.map_y.expand(n, -1, -1), align_corners=True
        )


class KorniaCropAndResize(nn.Module):
    """A fixed quadrilateral crop resized to 16x20 with ``kornia...crop_and_resize``."""

    def __init__(self) -> None:
        super().__init__()
        self.crop = _kornia_transform("crop_and_resize")
        box = [[4.0, 3.0], [27.0, 5.0], [26.0, 28.0], [5.0, 25.0]]  # tl, tr, br, bl (x, y)
        self.register_buffer("box", torch.tensor([box]))

    def forward(self, x):
        return self.crop(x, self.box.expand(x.shape[0], -1, -1), (16, 20))


class KorniaElastic(nn.Module):
    """``kornia...elastic_transform2d`` with fixed noise (a deterministic elastic warp)."""

    def __init__(self) -> None:
        super().__init__()
        self.elastic = _kornia_transform("elastic_transform2d")
        g = torch.Generator().manual_seed(13)
        self.register_buffer("noise", torch.rand(1, 2, 28, 28, generator=g) * 2 - 1)

    def forward(self, x):
        noise = self.noise.expand(x.shape[0], -1, -1, -1)
        return self.elastic(x, noise, kernel_size=(7, 7), sigma=(4.0, 4.0), alpha=(8.0, 8.0))


class KorniaRandomAffine(nn.Module):
    """``kornia.augmentation.RandomAffine`` pinned to one transform: degrees=(30, 30),
    scale=(0.9, 0.9), p=1, same_on_batch (a fixed 30-degree rotation at 0.9 scale)."""

    def __init__(self) -> None:
        super().__init__()
        try:
            import kornia.augmentation as ka
        except ImportError as exc:  # pragma: no cover
            raise ImportError(f"kornia is not installed ({exc})") from exc
        self.aug = ka.RandomAffine(
            degrees=(30.0, 30.0), scale=(0.9, 0.9), p=1.0, same_on_batch=True
        )

    def forward(self, x):
        return self.aug(x)


def kornia_warp_affine() -> nn.Module:
    torch.manual_seed(0)
    return KorniaWarpAffine().eval()


def kornia_warp_perspective() -> nn.Module:
    torch.manual_seed(1)
    return KorniaWarpPerspective().eval()


def kornia_rotate_scale_translate() -> nn.Module:
    return KorniaRotateScaleTranslate().eval()


def kornia_remap() -> nn.Module:
    return KorniaRemap().eval()


def kornia_crop_and_resize() -> nn.Module:
    return KorniaCropAndResize().eval()


def kornia_elastic() -> nn.Module:
    return KorniaElastic().eval()


def kornia_random_affine() -> nn.Module:
    return KorniaRandomAffine().eval()


# ---------------------------------------------------------------------------- hand-written


class PoolSTN(nn.Module):
    """The classic STN, its localisation net pooled with ``adaptive_avg_pool2d`` from 7x7 to 3x3
    (not a factor: overlapping, unequal windows), then a classifier."""

    def __init__(self, out_size: tuple[int, int] | None = None, tuple_out: bool = False) -> None:
        super().__init__()
        self.out_size = out_size
        self.tuple_out = tuple_out
        self.loc = nn.Sequential(
            nn.Conv2d(1, 6, 5, stride=2, padding=2),  # 28 -> 14
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),  # 14 -> 7
            nn.ReLU(),
        )
        self.fc = nn.Linear(8 * 3 * 3, 6)
        with torch.no_grad():
            self.fc.weight.mul_(0.05)
            self.fc.bias.copy_(torch.tensor(_rotation(15.0)))
        self.head = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.cls = nn.Linear(4, 10)

    def forward(self, x):
        f = F.adaptive_avg_pool2d(self.loc(x), (3, 3))
        theta = self.fc(f.flatten(1)).view(-1, 2, 3)
        h, w = self.out_size or x.shape[-2:]
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], h, w], align_corners=False)
        rectified = F.grid_sample(x, grid, align_corners=False)
        logits = F.log_softmax(self.cls(self.head(rectified).flatten(1)), dim=1)
        if self.tuple_out:
            return rectified, theta
        return logits


class TwoGridSTN(nn.Module):
    """Two samplers: a coarse affine warp, then a second predicted from the first's output
    (a cascade), sampled with border padding."""

    def __init__(self) -> None:
        super().__init__()
        self.loc1 = _LocNet(1, 28, 6, _rotation(-12.0, 0.95, 0.05, 0.0))
        self.loc2 = _LocNet(1, 28, 6, _rotation(8.0, 1.05, -0.1, 0.08))

    def forward(self, x):
        size = list(x.shape)
        t1 = self.loc1(x).view(-1, 2, 3)
        y = F.grid_sample(x, F.affine_grid(t1, size, align_corners=False), align_corners=False)
        t2 = self.loc2(y).view(-1, 2, 3)
        g2 = F.affine_grid(t2, size, align_corners=False)
        return F.grid_sample(y, g2, padding_mode="border", align_corners=False)


class FixedAffine(nn.Module):
    """A fixed affine warp (θ a parameter) with one ``grid_sample`` mode x padding pair."""

    def __init__(self, mode: str, padding: str, align_corners: bool) -> None:
        super().__init__()
        self.mode, self.padding, self.align_corners = mode, padding, align_corners
        # zoom out past the borders so every padding mode shows
        self.theta = nn.Parameter(torch.tensor([_rotation(27.0, 1.3, 0.15, -0.1)]).view(1, 2, 3))

    def forward(self, x):
        theta = self.theta.expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=self.align_corners)
        return F.grid_sample(
            x, grid, mode=self.mode, padding_mode=self.padding, align_corners=self.align_corners
        )


class VolumeSTN(nn.Module):
    """A volumetric STN: a 3-D affine θ (N, 3, 4) from a small 3-D localisation net, a 3-D
    affine grid and trilinear 5-D ``grid_sample`` (zeros padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool3d((3, 2, 2))
        )
        self.fc = nn.Linear(4 * 2 * 5 * 6, 12)
        nn.init.normal_(self.fc.weight, std=0.02)
        with torch.no_grad():
            rot = torch.tensor(_rotation(15.0, 0.9, 0.1, -0.05)).view(2, 3)
            theta = torch.eye(3, 4)
            theta[:2, :2], theta[:2, 3] = rot[:, :2], rot[:, 2]
            theta[2, 3] = 0.05
            self.fc.bias.copy_(theta.flatten())

    def forward(self, x):
        theta = self.fc(self.features(x).flatten(1)).view(-1, 3, 4)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


def stn_volumetric() -> nn.Module:
    torch.manual_seed(6)
    return VolumeSTN().eval()


def stn_pool_7to3() -> nn.Module:
    torch.manual_seed(2)
    return PoolSTN().eval()


def stn_tuple_output() -> nn.Module:
    torch.manual_seed(3)
    return PoolSTN(tuple_out=True).eval()


def stn_out_size() -> nn.Module:
    torch.manual_seed(4)
    return PoolSTN(out_size=(20, 36), tuple_out=True).eval()


def stn_two_grids() -> nn.Module:
    torch.manual_seed(5)
    return TwoGridSTN().eval()


MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")


def _fixed(mode: str, padding: str):
    # align_corners alternates so both values are covered across the nine pairs
    ac = (MODES.index(mode) + PADDINGS.index(padding)) % 2 == 1

    def factory() -> nn.Module:
        return FixedAffine(mode, padding, ac).eval()

    factory.__name__ = f"affine_{mode}_{padding}"
    factory.__doc__ = (
        f"A fixed affine warp, mode={mode}, padding_mode={padding}, align_corners={ac}."
    )
    return factory, ac


CORPUS: list[Entry] = [
    Entry(
        "kornia-warp-affine",
        "kornia_warp_affine",
        (3, 32, 32),
        "kornia",
        "STN sampled by kornia warp_affine (pixel-space M)",
    ),
    Entry(
        "kornia-warp-perspective",
        "kornia_warp_perspective",
        (3, 32, 32),
        "kornia",
        "STN predicting a homography, kornia warp_perspective",
    ),
    Entry(
        "kornia-rotate-scale-translate",
        "kornia_rotate_scale_translate",
        (3, 32, 32),
        "kornia",
        "kornia rotate -> scale -> translate, fixed parameters (3 samplers)",
    ),
    Entry(
        "kornia-remap", "kornia_remap", (3, 32, 32), "kornia", "kornia remap with fixed pixel maps"
    ),
    Entry(
        "kornia-crop-and-resize",
        "kornia_crop_and_resize",
        (3, 32, 32),
        "kornia",
        "kornia crop_and_resize, fixed box, 32x32 -> 16x20",
    ),
    Entry(
        "kornia-elastic",
        "kornia_elastic",
        (1, 28, 28),
        "kornia",
        "kornia elastic_transform2d with fixed noise",
    ),
    Entry(
        "kornia-random-affine",
        "kornia_random_affine",
        (3, 32, 32),
        "kornia",
        "kornia.augmentation.RandomAffine(degrees=(30,30), scale=(0.9,0.9), p=1, same_on_batch)",
    ),
    Entry(
        "stn-pool-7to3",
        "stn_pool_7to3",
        (1, 28, 28),
        "hand-written",
        "STN, adaptive_avg_pool2d 7x7 -> 3x3, classifier head",
    ),
    Entry(
        "stn-tuple-output",
        "stn_tuple_output",
        (1, 28, 28),
        "hand-written",
        "STN returning (rectified, theta)",
    ),
    Entry(
        "stn-out-size",
        "stn_out_size",
        (1, 28, 28),
        "hand-written",
        "STN sampling a 20x36 output from a 28x28 input, returns (rectified, theta)",
    ),
    Entry(
        "stn-two-grids",
        "stn_two_grids",
        (1, 28, 28),
        "hand-written",
        "two cascaded samplers (zeros, then border)",
    ),
    Entry(
        "stn-volumetric",
        "stn_volumetric",
        (1, 6, 10, 12),
        "hand-written",
        "volumetric STN: 3-D affine grid, trilinear 5-D grid_sample",
    ),
]

for _m in MODES:
    for _p in PADDINGS:
        _f, _ac = _fixed(_m, _p)
        globals()[_f.__name__] = _f
        CORPUS.append(
            Entry(
                f"affine-{_m}-{_p}",
                _f.__name__,
                (1, 16, 16),
                "hand-written",
                f"fixed affine warp, {_m}/{_p}, align_corners={_ac}",
            )
        )
del _m, _p, _f, _ac


def available(entry: Entry) -> str | None:
    """``None`` when ``entry``'s factory builds here, else the one-line reason it cannot
    (a kornia function missing from the installed kornia)."""
    try:
        globals()[entry.factory]()
    except ImportError as exc:
        return str(exc)
    return None


def by_name(name: str) -> Entry:
    return next(e for e in CORPUS if e.name == name)
