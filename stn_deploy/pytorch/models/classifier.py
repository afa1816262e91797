"""The PyTorch tutorial's STN classifier, generalised to any canvas size and STN front end."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn_deploy.errors import StnDeployError


def tutorial_localization(in_channels: int = 1) -> nn.Sequential:
    """The tutorial's localisation net: conv7-8, pool, relu, conv5-10, pool, relu."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, kernel_size=7),
        nn.MaxPool2d(2, stride=2),
        nn.ReLU(True),
        nn.Conv2d(8, 10, kernel_size=5),
        nn.MaxPool2d(2, stride=2),
        nn.ReLU(True),
    )


def flat_features(module: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Number of values ``module`` produces per sample for inputs of shape ``(C, H, W)``."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *in_shape))
    except RuntimeError as exc:
        raise StnDeployError(
            f"input shape {tuple(in_shape)} is too small for this network: {exc}"
        ) from exc
    return int(out[0].numel())


class STNClassifier(nn.Module):
    """An optional spatial-transformer front end followed by the tutorial's CNN.

    With ``stn`` the tutorial's affine STN on a 1x28x28 input this is exactly the network of
    the PyTorch "Spatial Transformer Networks" tutorial: conv5-10, pool, relu, conv5-20,
    Dropout2d, pool, relu, fc-50, dropout, fc-10, log_softmax. Other input sizes change only
    the width of ``fc1``; ``stn=None`` gives the CNN baseline.

    Args:
        stn: a module mapping ``(N, C, H, W)`` to ``(N, C', H', W')`` with an ``out_shape``
            method, or None.
        in_shape: ``(C, H, W)`` of the network input.
        num_classes: number of output classes.
        dropout: probability of both dropout layers (0.5 in the tutorial; 0 turns them off).

    Returns (forward): log-probabilities ``(N, num_classes)``.
    """

    def __init__(
        self,
        stn: nn.Module | None,
        in_shape: tuple[int, int, int],
        num_classes: int = 10,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(v) for v in in_shape)
        self.stn = stn
        feat_shape = stn.out_shape(self.in_shape) if stn is not None else self.in_shape
        self.conv1 = nn.Conv2d(feat_shape[0], 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        if not 0.0 <= dropout < 1.0:
            raise StnDeployError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.conv2_drop = nn.Dropout2d(p=self.dropout)
        self.flat = flat_features(
            nn.Sequential(self.conv1, nn.MaxPool2d(2), self.conv2, nn.MaxPool2d(2)), feat_shape
        )
        self.fc1 = nn.Linear(self.flat, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def rectify(self, x: Tensor) -> Tensor:
        """The STN's output for ``x`` (the input itself for the CNN baseline)."""
        return self.stn(x) if self.stn is not None else x

    def classify(self, x: Tensor) -> Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.reshape(-1, self.flat)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.rectify(x))


def from_tutorial_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map the PyTorch tutorial ``Net``'s state_dict keys to ``mnist-affine``'s.

    The tutorial keeps ``localization`` and ``fc_loc`` at the top level; here they live in
    the ``stn`` submodule.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("localization.", "fc_loc.")):
            key = "stn." + key
        out[key] = value
    return out
