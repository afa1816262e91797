"""The distorted-MNIST networks of the STN paper (Jaderberg et al. 2015, Sec. 4.1 and appendix).

Baseline CNN: conv 9x9 (32 filters, stride 1, no padding), 2x2 max-pooling, ReLU, conv 7x7
(32 filters), 2x2 max-pooling, ReLU, then the classification layer (fc to the classes,
log-softmax). No dropout by default (the paper trains without it).

ST-CNN: a spatial transformer in front of that CNN. Its localisation net is a small CNN: two
20-filter 5x5 conv layers, each followed by 2x2 max-pooling and ReLU, then a 50-unit
fully-connected layer and the regression layer (zero weights, identity bias). On canvases
larger than 28 (RTS 42x42, TC 60x60) the localisation net first max-pools its input by 2,
which keeps its cost below the classifier's; ``loc_pool`` overrides that. The transformer
samples a 28x28 output (``out_size``), so on RTS and TC it must zoom to fill it.

Filter counts follow the paper's appendix as we read it (the exact widths there are chosen to
match parameter counts across its models); ``stn-deploy models`` prints the counts.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models.classifier import flat_features

CONV_FILTERS = 32
LOC_FILTERS = 20
LOC_HIDDEN = 50


def paper_localization(in_channels: int = 1, pool_input: int = 1) -> nn.Sequential:
    """The ST-CNN localisation net: [maxpool pool_input], conv5-20, pool, relu, conv5-20, pool, relu."""
    if pool_input not in (1, 2):
        raise StnDeployError(f"loc_pool must be 1 or 2, got {pool_input!r}")
    layers: list[nn.Module] = [nn.MaxPool2d(pool_input)] if pool_input > 1 else []
    return nn.Sequential(
        *layers,
        nn.Conv2d(in_channels, LOC_FILTERS, kernel_size=5),
        nn.MaxPool2d(2, stride=2),
        nn.ReLU(True),
        nn.Conv2d(LOC_FILTERS, LOC_FILTERS, kernel_size=5),
        nn.MaxPool2d(2, stride=2),
        nn.ReLU(True),
    )


class PaperClassifier(nn.Module):
    """An optional spatial-transformer front end followed by the paper's baseline CNN.

    Same interface as :class:`~stn_deploy.pytorch.models.classifier.STNClassifier`
    (``stn``, ``rectify``, ``classify``); ``stn=None`` is the paper's CNN baseline.

    Args:
        stn: a module mapping ``(N, C, H, W)`` to ``(N, C', H', W')`` with ``out_shape``, or None.
        in_shape: ``(C, H, W)`` of the network input.
        num_classes: number of output classes.
        dropout: dropout before the classification layer (0: none, the paper's setting).

    Returns (forward): log-probabilities ``(N, num_classes)``.
    """

    def __init__(
        self,
        stn: nn.Module | None,
        in_shape: tuple[int, int, int],
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(v) for v in in_shape)
        self.stn = stn
        feat_shape = stn.out_shape(self.in_shape) if stn is not None else self.in_shape
        if not 0.0 <= dropout < 1.0:
            raise StnDeployError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.conv1 = nn.Conv2d(feat_shape[0], CONV_FILTERS, kernel_size=9)
        self.conv2 = nn.Conv2d(CONV_FILTERS, CONV_FILTERS, kernel_size=7)
        self.flat = flat_features(
            nn.Sequential(self.conv1, nn.MaxPool2d(2), self.conv2, nn.MaxPool2d(2)), feat_shape
        )
        self.fc = nn.Linear(self.flat, num_classes)

    def rectify(self, x: Tensor) -> Tensor:
        """The STN's output for ``x`` (the input itself for the CNN baseline)."""
        return self.stn(x) if self.stn is not None else x

    def classify(self, x: Tensor) -> Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = x.reshape(-1, self.flat)
        x = F.dropout(x, p=self.dropout, training=self.training)
        return F.log_softmax(self.fc(x), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.rectify(x))
