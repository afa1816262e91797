"""The spatial transformer module and its compositions (series, parallel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models.sampler import SamplerConfig
from stn_deploy.pytorch.models.transforms import Transform


class SpatialTransformer(nn.Module):
    """Localisation net + transform head + sampler (Jaderberg et al. 2015).

    ``localization`` maps the input ``(N, C, H, W)`` to features that are flattened to
    ``(N, loc_features)``; ``fc_loc`` regresses θ ``(N, P)`` from them. The last layer of
    ``fc_loc`` starts with zero weights and the identity as bias, so an untrained STN passes
    its input through unchanged (resampled to ``sampler.out_size``).

    Args:
        localization: the localisation net (any module producing ``loc_features`` values).
        loc_features: number of features per sample after flattening the localisation output.
        transform: the parameterisation of θ and its grid generator.
        sampler: sampling mode, padding, align_corners and output size.
        hidden: width of the regressor's hidden layer (32 in the PyTorch tutorial).

    Example:
        >>> from stn_deploy.pytorch.models.transforms import AffineTransform
        >>> loc = nn.Sequential(nn.Conv2d(1, 4, 5), nn.AdaptiveAvgPool2d(2))
        >>> stn = SpatialTransformer(loc, 16, AffineTransform(), SamplerConfig(out_size=(20, 20)))
        >>> stn(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 20, 20])
    """

    def __init__(
        self,
        localization: nn.Module,
        loc_features: int,
        transform: Transform,
        sampler: SamplerConfig | None = None,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        self.localization = localization
        self.loc_features = int(loc_features)
        self.transform = transform
        self.sampler = sampler or SamplerConfig()
        self.fc_loc = nn.Sequential(
            nn.Linear(self.loc_features, hidden),
            nn.ReLU(True),
            nn.Linear(hidden, transform.num_params),
        )
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the regressor's last weights and set its bias to the identity transform."""
        last = self.fc_loc[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(self.transform.identity())

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(C, H_out, W_out)`` produced for a sample of shape ``(C, H, W)``."""
        c, h, w = in_shape
        return (c, *self.sampler.out_hw((h, w)))

    def theta(self, x: Tensor) -> Tensor:
        """Transform parameters ``(N, P)`` predicted for input ``x`` ``(N, C, H, W)``."""
        xs = self.localization(x)
        xs = xs.reshape(xs.shape[0], -1)
        if xs.shape[1] != self.loc_features:
            raise StnDeployError(
                f"localisation net gives {xs.shape[1]} features for input {tuple(x.shape)}, "
                f"the regressor expects {self.loc_features}: the input size does not fit this STN"
            )
        return self.fc_loc(xs)

    def sample(self, x: Tensor, theta: Tensor) -> Tensor:
        """Sample ``x`` ``(N, C, H, W)`` at the grid of θ; returns ``(N, C, H_out, W_out)``."""
        n, c, h, w = x.shape
        ho, wo = self.sampler.out_hw((h, w))
        grid = self.transform.grid(theta, (n, c, ho, wo), self.sampler.align_corners)
        return F.grid_sample(
            x,
            grid,
            mode=self.sampler.mode,
            padding_mode=self.sampler.padding_mode,
            align_corners=self.sampler.align_corners,
        )

    def forward_with_theta(self, x: Tensor) -> tuple[Tensor, Tensor]:
        theta = self.theta(x)
        return self.sample(x, theta), theta

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_theta(x)[0]


class STNSeries(nn.Module):
    """Spatial transformers applied one after another; each reads the previous one's output."""

    def __init__(self, stns: list[nn.Module]) -> None:
        super().__init__()
        if not stns:
            raise StnDeployError("STNSeries needs at least one spatial transformer")
        self.stns = nn.ModuleList(stns)

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        for stn in self.stns:
            in_shape = stn.out_shape(in_shape)
        return in_shape

    def forward(self, x: Tensor) -> Tensor:
        for stn in self.stns:
            x = stn(x)
        return x


class STNParallel(nn.Module):
    """Spatial transformers applied to the same input, outputs concatenated along channels."""

    def __init__(self, stns: list[nn.Module]) -> None:
        super().__init__()
        if not stns:
            raise StnDeployError("STNParallel needs at least one spatial transformer")
        self.stns = nn.ModuleList(stns)

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        shapes = [stn.out_shape(in_shape) for stn in self.stns]
        if len({s[1:] for s in shapes}) != 1:
            raise StnDeployError(
                f"parallel STNs must share an output size, got {[s[1:] for s in shapes]}"
            )
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([stn(x) for stn in self.stns], dim=1)
