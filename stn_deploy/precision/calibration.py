"""Calibration images for int8: real MNIST *training* images distorted as the model was trained
(numpy only, no torch).

The distortion follows from the input canvas (42x42: RTS, 60x60: TC) unless given; a 28x28
input could be any of none/R/P/E, so it must be named. Images are drawn without replacement
from the 60,000 training images with ``numpy.random.default_rng(seed)``, distorted with the
same seed (:func:`stn_deploy.data.make_split`, training split) and normalised with the model's
``(x - mean) / std``: the same seed gives the same array.

Example:
    >>> spec = CalibrationSpec(count=64, seed=0)
    >>> x, source = calibration_set(spec, (1, 42, 42), [0.1307], [0.3081])  # doctest: +SKIP
    >>> x.shape, source                                                      # doctest: +SKIP
    ((64, 1, 42, 42), '64 MNIST training images, RTS-distorted (seed 0)')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.data import CANVAS, MnistArrays, load_mnist, make_split, normalise
from stn_deploy.errors import StnDeployError

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_COUNT = 512
#: the canvas sizes that name one distortion
_BY_CANVAS = {42: "rts", 60: "tc"}


@dataclass(frozen=True)
class CalibrationSpec:
    """How int8 ranges are calibrated: image count, ORT calibration method, seed, distortion
    (None: from the canvas), and whether to use synthetic digits instead of MNIST (tests)."""

    count: int = DEFAULT_COUNT
    method: str = "minmax"
    seed: int = 0
    distortion: str | None = None
    synthetic: bool = False

    def check(self) -> None:
        if self.count < 1:
            raise StnDeployError(
                f"{{calibration.count}} must be at least 1, got {self.count}",
                param="calibration.count",
            )
        if self.method not in METHODS:
            raise StnDeployError(
                f"unknown calibration method {self.method!r}: choose from {', '.join(METHODS)}"
            )
        if self.seed < 0:
            raise StnDeployError(
                f"{{calibration.seed}} must be non-negative, got {self.seed}",
                param="calibration.seed",
            )
        if self.distortion is not None and self.distortion not in CANVAS:
            raise StnDeployError(
                f"unknown distortion {self.distortion!r}: choose from {', '.join(CANVAS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distortion_for(shape: tuple[int, ...], distortion: str | None = None) -> str:
    """The distortion to calibrate a ``(C, H, W)`` input with; checks it fits the canvas."""
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise StnDeployError(
            f"int8 calibration uses MNIST images: the model must take (N, 1, S, S), it takes "
            f"(N, {', '.join(map(str, shape))})"
        )
    size = int(shape[1])
    if distortion is None:
        if size not in _BY_CANVAS:
            fits = [k for k, s in CANVAS.items() if s == size]
            if not fits:
                raise StnDeployError(
                    f"no MNIST distortion has a {size}x{size} canvas (they have "
                    f"{sorted(set(CANVAS.values()))})"
                )
            raise StnDeployError(
                f"a {size}x{size} input fits several distortions: pass "
                f"{{calibration.distortion}} {'|'.join(fits)}",
                param="calibration.distortion",
            )
        return _BY_CANVAS[size]
    if CANVAS[distortion] != size:
        raise StnDeployError(
            f"{{calibration.distortion}} {distortion} makes {CANVAS[distortion]}x"
            f"{CANVAS[distortion]} images, the model takes {size}x{size}",
            param="calibration.distortion",
        )
    return distortion


def calibration_set(
    spec: CalibrationSpec,
    shape: tuple[int, ...],
    mean: list[float],
    std: list[float],
    *,
    data: MnistArrays | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, str]:
    """``(count, 1, S, S)`` float32 normalised calibration images and a line saying what they are.

    ``data``: MNIST arrays to draw from (default: :func:`load_mnist` from the cache, whose
    absence is a one-line error naming ``stn-deploy data fetch``).
    """
    spec.check()
    kind = distortion_for(tuple(shape), spec.distortion)
    what = "MNIST"
    if data is None:
        if spec.synthetic:
            from stn_deploy.data import synthetic_mnist

            data, what = synthetic_mnist(n_train=spec.count, n_test=1, seed=spec.seed), "synthetic"
        else:
            try:
                data = load_mnist(cache_dir=cache_dir)
            except StnDeployError as exc:
                from stn_deploy.data import default_cache_dir, mnist_available

                where = Path(cache_dir) if cache_dir else default_cache_dir()
                if mnist_available(where):
                    raise StnDeployError(
                        f"int8 calibration: {exc.template}", param=exc.params
                    ) from None
                raise StnDeployError(
                    f"int8 calibration needs real MNIST training images and {where} has none: "
                    "run `stn-deploy data fetch` (or pass {cache_dir})",
                    param="cache_dir",
                ) from None
    n = len(data.train_images)
    if spec.count > n:
        raise StnDeployError(
            f"{{calibration.count}} {spec.count} is more than the {n} training images",
            param="calibration.count",
        )
    pick = np.sort(np.random.default_rng(spec.seed).choice(n, spec.count, replace=False))
    x, _ = make_split(
        data.train_images[pick], data.train_labels[pick], kind, spec.seed, split="train"
    )
    return normalise(
        x, mean, std
    ), f"{spec.count} {what} training images, {kind.upper()}-distorted (seed {spec.seed})"
