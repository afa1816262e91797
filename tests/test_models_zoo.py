"""The zoo: mnist-affine is the PyTorch tutorial's network, every entry builds at every canvas."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models import ZOO, build_model, count_parameters, from_tutorial_state_dict


class TutorialNet(nn.Module):
    """The network of the PyTorch 'Spatial Transformer Networks' tutorial, as written there."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
        )
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    def stn(self, x):
        xs = self.localization(x)
        xs = xs.view(-1, 10 * 3 * 3)
        theta = self.fc_loc(xs).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x):
        x = self.stn(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def test_mnist_affine_is_the_tutorial_network():
    torch.manual_seed(0)
    ref = TutorialNet()
    with torch.no_grad():  # move away from identity so the STN really warps
        ref.fc_loc[2].weight.normal_(0, 0.05)
    ours = build_model("mnist-affine")
    mapped = from_tutorial_state_dict(ref.state_dict())
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()
    }
    ours.load_state_dict(mapped)
    assert count_parameters(ours) == count_parameters(ref) == 27360
    x = torch.rand(5, 1, 28, 28)
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=0, rtol=0)
    # same dropout layers in the same places: identical outputs in training mode for one seed
    ref.train(), ours.train()
    torch.manual_seed(3)
    a = ref(x)
    torch.manual_seed(3)
    b = ours(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert ours.stn.fc_loc[0].in_features == 90 and ours.fc1.in_features == 320


def test_fresh_mnist_affine_starts_at_identity():
    m = build_model("mnist-affine", in_size=28).eval()
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(m.rectify(x), x, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("in_size", [28, 42, 60])
def test_every_zoo_model_builds_runs_and_trains(name, in_size):
    torch.manual_seed(0)
    m = build_model(name, in_size=in_size)
    x = torch.rand(3, 1, in_size, in_size)
    out = m(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(3))  # log-probabilities
    F.nll_loss(out, torch.tensor([1, 2, 3])).backward()
    assert m.conv1.weight.grad is not None and torch.count_nonzero(m.conv1.weight.grad) > 0
    if ZOO[name].transform != "none":
        rect = m.eval().rectify(x)
        assert rect.shape[-2:] == (28, 28)
        if in_size == 28 and name != "mnist-affine-parallel":
            torch.testing.assert_close(rect, x, atol=2e-5, rtol=0)


def test_zoo_arguments_and_errors():
    m = build_model(
        "mnist-tps",
        in_size=42,
        mode="bicubic",
        padding_mode="border",
        align_corners=True,
        grid_size=[3, 3],
    )
    assert m.stn.transform.num_params == 18
    assert (m.stn.sampler.mode, m.stn.sampler.padding_mode, m.stn.sampler.align_corners) == (
        "bicubic",
        "border",
        True,
    )
    with pytest.raises(StnDeployError, match="unknown model 'mnist-foo'"):
        build_model("mnist-foo")
    with pytest.raises(StnDeployError, match="has no argument 'grid_size'"):
        build_model("mnist-affine", grid_size=[3, 3])
    with pytest.raises(StnDeployError, match="too small"):
        build_model("mnist-affine", in_size=12)


def test_dropout_argument():
    m = build_model("mnist-affine", dropout=0.0)
    assert m.dropout == 0.0 and m.conv2_drop.p == 0.0
    m.train()
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(m(x), m.eval()(x))  # no dropout: train and eval agree
    assert build_model("mnist-cnn").dropout == 0.5
    with pytest.raises(StnDeployError, match="dropout"):
        build_model("mnist-affine", dropout=1.0)
