"""Input sets for ``verify`` (numpy only): golden, seeded random, real MNIST, and stress.

Every set is ``(N, C, H, W)`` float32 already normalised the way the model expects (the
``normalization_mean`` / ``normalization_std`` metadata applied to 0..1 pixels; mean 0 and std 1
when the file does not say), under the model's single image input name.

- ``golden``: the inputs of the golden bundle beside the model (``NAME.io.npz``).
- ``random``: seeded uniform 0..1 pixels. A model with several inputs gets seeded uniform 0..1
  values in every input, each of its own shape (the file's static dims, else the golden
  bundle's, else the torch model's); an image-shaped (4-D) input is normalised as above. The
  other generated sets are images for a one-input model, so such a model skips them.
- ``mnist``: the first N MNIST test images, distorted as the model expects (the variant it was
  trained on when known, else by canvas: 42 -> RTS, 60 -> TC, 28 -> R), with labels, so that the
  accuracy of every runtime can be reported. Only when the MNIST cache exists.
- ``stress``: inputs meant to drive the STN to extreme transforms, in six kinds cycled over N:
  digits rotated by 120..180 degrees; digits shrunk to 0.25..0.4 of their size and pushed into a
  corner (the STN must zoom in near the border); digits blown up 1.8..2.6x so they overflow the
  canvas (zoom-out: the sampler reads far outside the image); digits rotated 90 degrees and
  half outside an edge; noise of amplitude 8 after normalisation (drives the localisation net
  far outside its training range); a saturated checkerboard. How extreme the transforms really
  were is reported from the sampler's grid (see :mod:`stn_deploy.verify.stn_stats`).

:func:`load_input_sets` is verify's data loader: the sets asked for that can be made for a
model, and why the others cannot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from stn_deploy.data import normalise
from stn_deploy.errors import StnDeployError
from stn_deploy.names import unique_names
from stn_deploy.runtimes import TensorSpec

INPUT_KINDS = ("golden", "random", "mnist", "stress")
CANVAS_TO_DISTORTION = {42: "rts", 60: "tc", 28: "r"}
STRESS_KINDS = ("rotated", "corner", "zoom-out", "edge", "noise", "checker")


@dataclass
class InputSet:
    """Named feeds of one kind: ``feeds[name]`` is ``(N, ...)``; ``labels`` ``(N,)`` or None."""

    name: str
    feeds: dict[str, np.ndarray]
    description: str
    labels: np.ndarray | None = None
    #: stress inputs: the kind of each row (see STRESS_KINDS)
    kinds: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0])

    def first(self, rows: int) -> InputSet:
        """This set cut to its first ``rows`` (what a runtime ran within its time budget)."""
        return InputSet(
            self.name,
            {k: v[:rows] for k, v in self.feeds.items()},
            f"{self.description} (first {rows})",
            None if self.labels is None else self.labels[:rows],
            self.kinds[:rows],
        )


def parse_kinds(spec: str | None) -> list[str] | None:
    """``"golden,stress"`` -> ``["golden", "stress"]``; None/'all' -> None (the default sets);
    an empty list or item is an error."""
    if spec is None or spec.strip().lower() == "all":
        return None

    def kind(part: str) -> str:
        k = part.strip().lower()
        if k not in INPUT_KINDS:
            raise StnDeployError(
                f"unknown input set {part!r}: choose from {', '.join(INPUT_KINDS)}"
            )
        return k

    return unique_names(spec, kind, "inputs")


def normalization(meta: dict[str, str], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std)`` ``(C,)`` from the model's metadata (0 and 1 when absent)."""
    try:
        mean = np.asarray(json.loads(meta.get("normalization_mean", "[0.0]")), np.float32)
        std = np.asarray(json.loads(meta.get("normalization_std", "[1.0]")), np.float32)
    except (json.JSONDecodeError, ValueError) as exc:
        raise StnDeployError("the model's normalization metadata is not a JSON list") from exc
    mean, std = np.broadcast_to(mean, (channels,)), np.broadcast_to(std, (channels,))
    if np.any(std == 0):
        raise StnDeployError("the model's normalization_std metadata holds a zero")
    return mean, std


def random_set(
    input_name: str, chw: tuple[int, int, int], count: int, seed: int, mean, std
) -> InputSet:
    pixels = np.random.default_rng(seed).random((count, *chw), dtype=np.float32)
    return InputSet(
        "random",
        {input_name: normalise(pixels, mean, std)},
        f"{count} seeded uniform 0..1 images (seed {seed})",
    )


def random_inputs_set(
    specs: list[TensorSpec], shapes: list[tuple[int, ...]], count: int, seed: int, meta
) -> InputSet:
    """Seeded uniform 0..1 values for every input of a model with several (``shapes``: each
    one's per-sample shape); the first input's are :func:`random_set`'s, input ``i``'s come
    from seed ``(seed, i)``; 4-D inputs are normalised with the model's metadata."""
    feeds = {}
    for i, (spec, shape) in enumerate(zip(specs, shapes, strict=True)):
        rng = np.random.default_rng(seed if i == 0 else [seed, i])
        x = rng.random((count, *shape), dtype=np.float32)
        if len(shape) == 3:
            x = normalise(x, *normalization(meta, shape[0]))
        feeds[spec.name] = x
    shown = ", ".join(f"{s.name} {list(sh)}" for s, sh in zip(specs, shapes, strict=True))
    return InputSet(
        "random", feeds, f"{count} seeded uniform 0..1 samples of each input: {shown} (seed {seed})"
    )


def multi_input_shapes(
    specs: list[TensorSpec], bundle=None, torch_shapes=None
) -> list[tuple[int, ...]] | str:
    """Each input's per-sample shape: the file's static dims, else the golden bundle's array,
    else the torch model's (``torch_shapes``, in the file's input order); or why one is not
    known or cannot be fed random floats."""
    shapes = []
    for i, spec in enumerate(specs):
        if not str(spec.dtype).startswith(("float", "bfloat")):
            return f"input {spec.name!r} is {spec.dtype}: random inputs are floats"
        dims = tuple(spec.shape[1:]) if spec.shape else None
        if dims is not None and all(isinstance(d, int) and d > 0 for d in dims):
            shapes.append(tuple(int(d) for d in dims))
        elif bundle is not None and spec.name in bundle.inputs:
            shapes.append(tuple(int(d) for d in bundle.inputs[spec.name].shape[1:]))
        elif torch_shapes is not None and len(torch_shapes) == len(specs):
            shapes.append(tuple(int(d) for d in torch_shapes[i]))
        else:
            shown = list(spec.shape) if spec.shape else "unknown"
            return f"the shape of input {spec.name!r} ({shown}) is not known"
    return shapes


def _digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(count, 28, 28)`` float 0..1 digits: MNIST test images when cached, else synthetic."""
    from stn_deploy.data import load_mnist, mnist_available, synthetic_digits

    if mnist_available():
        try:
            d = load_mnist()
            return d.test_images[:count] / np.float32(255), d.test_labels[:count], "MNIST test"
        except StnDeployError:
            pass
    images, labels = synthetic_digits(count, seed=seed)
    return images / np.float32(255), labels, "synthetic"


def mnist_set(
    input_name: str,
    chw: tuple[int, int, int],
    count: int,
    seed: int,
    mean,
    std,
    distortion: str | None = None,
) -> InputSet | str:
    """Real distorted MNIST test images, or a string saying why there are none."""
    from stn_deploy.data import CANVAS, load_mnist, make_split, mnist_available

    c, h, w = chw
    if h != w or c != 1:
        return f"the model takes {c}x{h}x{w}, not a 1-channel square MNIST canvas"
    kind = distortion or CANVAS_TO_DISTORTION.get(h)
    if kind is None or CANVAS.get(kind) != h:
        return f"no MNIST variant has a {h}x{w} canvas (28: R, 42: RTS, 60: TC)"
    if not mnist_available():
        return "MNIST is not in the cache (stn-deploy data fetch)"
    data = load_mnist()
    x, y = make_split(data.test_images[:count], data.test_labels[:count], kind, seed, split="test")
    return InputSet(
        "mnist",
        {input_name: normalise(x, mean, std)},
        f"the first {count} MNIST test images, {kind.upper()}-distorted (seed {seed})",
        labels=y,
    )


def warp(digit: np.ndarray, size: tuple[int, int], angle: float, scale: float, shift) -> np.ndarray:
    """Place a ``(h, w)`` digit on an ``(H, W)`` canvas: rotate by ``angle`` (radians) and scale
    about its centre, put that centre at the canvas centre + ``shift`` (pixels); bilinear,
    zero outside. Returns ``(H, W)`` float32."""
    H, W = size
    h, w = digit.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    x0 = xx - (W - 1) / 2 - shift[0]
    y0 = yy - (H - 1) / 2 - shift[1]
    c, s = np.cos(angle), np.sin(angle)
    sx = (c * x0 + s * y0) / scale + (w - 1) / 2  # inverse rotation, inverse scale
    sy = (-s * x0 + c * y0) / scale + (h - 1) / 2
    fx, fy = np.floor(sx), np.floor(sy)
    ax, ay = sx - fx, sy - fy
    out = np.zeros((H, W))
    padded = np.pad(digit.astype(np.float64), 1)
    for dx, dy, wgt in (
        (0, 0, (1 - ax) * (1 - ay)),
        (1, 0, ax * (1 - ay)),
        (0, 1, (1 - ax) * ay),
        (1, 1, ax * ay),
    ):
        ix = np.clip(fx + dx + 1, 0, w + 1).astype(int)
        iy = np.clip(fy + dy + 1, 0, h + 1).astype(int)
        inside = (fx + dx >= 0) & (fx + dx < w) & (fy + dy >= 0) & (fy + dy < h)
        out += np.where(inside, padded[iy, ix], 0.0) * wgt
    return out.astype(np.float32)


def stress_set(
    input_name: str, chw: tuple[int, int, int], count: int, seed: int, mean, std
) -> InputSet:
    """Inputs meant to push the STN to extreme transforms (see the module doc)."""
    c, H, W = chw
    rng = np.random.default_rng(seed)
    digits, _, source = _digits(count, seed)
    pixels = np.zeros((count, c, H, W), np.float32)
    kinds = []
    extra_noise = {}
    for i in range(count):
        kind = STRESS_KINDS[i % len(STRESS_KINDS)]
        kinds.append(kind)
        d = digits[i % len(digits)]
        fit = min(H, W) / 28.0  # a digit filling the canvas side at scale 1
        sign = rng.choice([-1.0, 1.0], size=2)
        if kind == "rotated":
            img = warp(d, (H, W), np.deg2rad(rng.uniform(120, 180)) * sign[0], fit * 0.8, (0, 0))
        elif kind == "corner":
            s = fit * rng.uniform(0.25, 0.4)
            off = (np.array([W, H]) / 2 - 14 * s - 1) * sign
            img = warp(d, (H, W), rng.uniform(-0.5, 0.5), s, off)
        elif kind == "zoom-out":
            img = warp(d, (H, W), rng.uniform(-0.5, 0.5), fit * rng.uniform(1.8, 2.6), (0, 0))
        elif kind == "edge":
            off = (np.array([W, H]) / 2) * sign * np.array([1.0, rng.uniform(0, 0.5)])
            img = warp(d, (H, W), np.pi / 2 * sign[1], fit * 0.8, off)
        elif kind == "noise":
            img = np.zeros((H, W), np.float32)
            extra_noise[i] = rng.normal(0.0, 8.0, (c, H, W)).astype(np.float32)
        else:  # saturated checkerboard, 4-pixel squares
            yy, xx = np.mgrid[0:H, 0:W]
            img = (((yy // 4) + (xx // 4)) % 2).astype(np.float32)
        pixels[i] = np.clip(img, 0, 1)[None]
    x = normalise(pixels, mean, std)
    for i, noise in extra_noise.items():
        x[i] = noise  # already in normalised units
    counts = {k: kinds.count(k) for k in STRESS_KINDS if k in kinds}
    return InputSet(
        "stress",
        {input_name: x},
        f"{count} stress images from {source} digits (seed {seed}): "
        + ", ".join(f"{n} {k}" for k, n in counts.items()),
        kinds=kinds,
    )


def image_input(inputs: list[TensorSpec]) -> tuple[str, tuple[int, int, int]] | str:
    """``(name, (C, H, W))`` of the model's single image input, or why generated inputs
    cannot feed it."""
    if len(inputs) != 1:
        return (
            f"the model has {len(inputs)} inputs (these are images for a one-input model; "
            "golden and random inputs can feed it)"
        )
    spec = inputs[0]
    dims = spec.shape or ()
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return f"input {spec.name!r} is not (N, C, H, W) with fixed C, H, W: {list(dims)}"
    return spec.name, (int(dims[1]), int(dims[2]), int(dims[3]))


def golden_set(bundle, bundle_name: str) -> InputSet:
    """The inputs of a golden bundle (:class:`~stn_deploy.export.golden.GoldenBundle`)."""
    n = next(iter(bundle.inputs.values())).shape[0]
    source = f" ({bundle.meta['source']})" if bundle.meta.get("source") else ""
    return InputSet("golden", dict(bundle.inputs), f"{n} inputs of {bundle_name}{source}")


def load_input_sets(
    kinds: list[str],
    *,
    bundle,
    bundle_name: str,
    in_specs: list[TensorSpec],
    meta: dict[str, str],
    count: int,
    seed: int,
    distortion: str | None = None,
    torch_shapes=None,
) -> tuple[list[InputSet], dict[str, str]]:
    """The input sets named in ``kinds`` (in that order) that can be made for a model with
    inputs ``in_specs`` and stn-deploy metadata ``meta``, and ``{kind: why not}`` for the others.
    ``bundle``: the golden bundle (None: no golden set); ``torch_shapes``: the torch model's
    per-input shapes (a model with several inputs whose file leaves some dims open)."""
    sets: list[InputSet] = []
    skipped: dict[str, str] = {}
    image = image_input(in_specs)
    norm = None if isinstance(image, str) else normalization(meta, image[1][0])
    for kind in kinds:
        if kind == "golden":
            if bundle is None:
                skipped[kind] = f"no golden bundle ({bundle_name})"
            else:
                sets.append(golden_set(bundle, bundle_name))
        elif kind == "random" and len(in_specs) > 1:
            shapes = multi_input_shapes(in_specs, bundle, torch_shapes)
            if isinstance(shapes, str):
                skipped[kind] = shapes
            else:
                sets.append(random_inputs_set(in_specs, shapes, count, seed, meta))
        elif isinstance(image, str):
            skipped[kind] = image
        else:
            got = _generated_set(kind, *image, norm, count, seed, distortion)
            if isinstance(got, str):
                skipped[kind] = got
            else:
                sets.append(got)
    return sets, skipped


def _generated_set(kind, name, chw, norm, count, seed, distortion) -> InputSet | str:
    mean, std = norm
    if kind == "random":
        return random_set(name, chw, count, seed, mean, std)
    if kind == "mnist":
        return mnist_set(name, chw, count, seed, mean, std, distortion)
    return stress_set(name, chw, count, seed, mean, std)
