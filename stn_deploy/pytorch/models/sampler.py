"""Sampler settings of a spatial transformer: how the sampling grid reads the input."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from stn_deploy.errors import StnDeployError

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")


@dataclass(frozen=True)
class SamplerConfig:
    """How a grid is sampled, mirroring ``torch.nn.functional.grid_sample``.

    Args:
        mode: ``bilinear``, ``nearest`` or ``bicubic`` (bicubic uses A = -0.75, as torch).
        padding_mode: ``zeros``, ``border`` or ``reflection``: what is read outside the input.
        align_corners: whether -1 and 1 are the centres (True) or the outer edges (False)
            of the corner pixels.
        out_size: ``(H_out, W_out)`` of the sampled image, or None for the input's size.
            A size smaller than the input lets the STN zoom: a 42x42 canvas sampled to 28x28.

    Example:
        >>> SamplerConfig(mode="bicubic", out_size=(28, 28)).out_hw((42, 42))
        (28, 28)
    """

    mode: str = "bilinear"
    padding_mode: str = "zeros"
    align_corners: bool = False
    out_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise StnDeployError(
                f"unknown sampler mode {self.mode!r}: expected one of {', '.join(MODES)}"
            )
        if self.padding_mode not in PADDING_MODES:
            raise StnDeployError(
                f"unknown padding mode {self.padding_mode!r}: expected one of {', '.join(PADDING_MODES)}"
            )
        if not isinstance(self.align_corners, bool):
            raise StnDeployError(f"align_corners must be true or false, got {self.align_corners!r}")
        if self.out_size is not None:
            size = tuple(self.out_size)
            if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
                raise StnDeployError(
                    f"out_size must be two positive integers (H, W), got {self.out_size!r}"
                )
            object.__setattr__(self, "out_size", size)

    def out_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        """The sampled image's ``(H, W)`` for an input of spatial size ``in_hw``."""
        return tuple(self.out_size) if self.out_size is not None else tuple(in_hw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_size"] = list(self.out_size) if self.out_size is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplerConfig:
        d = dict(d)
        if d.get("out_size") is not None:
            d["out_size"] = tuple(d["out_size"])
        return cls(**d)
