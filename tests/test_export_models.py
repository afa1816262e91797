"""export of hand-written models: several outputs (tuple, dict), adaptive pooling at a
non-factor size, two grids in one model, a batch-dependent branch (refused by the self-check),
data-dependent control flow under torch.export; each compared with torch on ORT CPU at batch
1 and 5. The default exporter is torch.export (opset >= 16); the ``generic`` target's opset 11
goes through TorchScript, which is also asked for by name here."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import read_bundle
from stn_deploy.export.metadata import stn_metadata
from stn_deploy.pytorch.exporter import export_model
from stn_deploy.pytorch.models.checkpoint import ModelConfig
from stn_deploy.pytorch.models.loading import LoadedModel

_ID = torch.tensor([[1.0, 0, 0], [0, 1, 0]])


class _Theta(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 6)

    def forward(self, x):
        return self.fc(x.mean((2, 3))).view(-1, 2, 3) * 0.2 + _ID


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = _Theta()

    def forward(self, x):
        theta = self.loc(x)
        y = F.grid_sample(
            x, F.affine_grid(theta, x.shape, align_corners=False), align_corners=False
        )
        return y.flatten(1).log_softmax(1), theta


class DictOut(TupleOut):
    def forward(self, x):
        y, theta = super().forward(x)
        return {"scores": y, "theta": theta}


class TwoGridsPool(nn.Module):
    """Two samplers (different modes / paddings / align_corners), then 7x7 -> 3x3 pooling."""

    def __init__(self):
        super().__init__()
        self.a, self.b = _Theta(), _Theta()

    def forward(self, x):
        g1 = F.affine_grid(self.a(x), x.shape, align_corners=False)
        y = F.grid_sample(x, g1, align_corners=False)
        g2 = F.affine_grid(self.b(x), x.shape, align_corners=True)
        y = F.grid_sample(y, g2, mode="nearest", padding_mode="border", align_corners=True)
        return (F.adaptive_avg_pool2d(y, self.pool) if self.pool else y).flatten(1)

    pool = (3, 3)  # 7x7 -> 3x3: not a factor; TorchScript cannot export it


class TwoGrids(TwoGridsPool):
    pool = None


class BatchBranch(TupleOut):
    """What torchvision's ``if squashed_batch_size > 1`` does: a branch on the batch size."""

    def forward(self, x):
        y, _ = super().forward(x)
        return y * 2 if x.shape[0] > 1 else y


class DataDependent(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def _loaded(model):
    torch.manual_seed(0)
    model = model()
    return LoadedModel(model.eval(), ModelConfig("hand", {}, [3, 7, 7]), source="hand")


def _check_against_torch(loaded, path, names):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == names
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 7, 7)).astype(np.float32)
        with torch.inference_mode():
            ref = loaded.model(torch.from_numpy(x))
        ref = list(ref.values()) if isinstance(ref, dict) else ref
        ref = [ref] if isinstance(ref, torch.Tensor) else ref
        feed = {sess.get_inputs()[0].name: x}
        for r, o in zip(ref, sess.run(names, feed), strict=True):
            np.testing.assert_allclose(o, r.numpy(), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("lowering", ["native", "portable", "custom"])
@pytest.mark.parametrize(
    "model,names",
    [(TupleOut, ["output_0", "output_1"]), (DictOut, ["scores", "theta"]), (TwoGrids, None)],
)
def test_torchscript_several_outputs_and_grids(tmp_path, model, names, lowering):
    loaded = _loaded(model)
    s = export_model(loaded, tmp_path / "m.onnx", lowering=lowering, target="generic")
    names = names or ["output"]
    assert s.outputs == names
    assert s.samplers == (2 if model is TwoGrids else 1)
    assert sorted(read_bundle(s.golden_path).outputs) == sorted(names)
    _check_against_torch(loaded, s.path, names)


def test_torchscript_refuses_a_non_factor_pool_naming_dynamo(tmp_path):
    with pytest.raises(StnDeployError, match="adaptive_avg_pool2d.*exporter='dynamo'"):
        export_model(_loaded(TwoGridsPool), tmp_path / "m.onnx", exporter="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_output_names_override(tmp_path):
    loaded = _loaded(TupleOut)
    s = export_model(loaded, tmp_path / "m.onnx", output_names=["y", "t"], check=False)
    assert s.outputs == ["y", "t"]
    assert "--no-check" in stn_metadata(onnx.load(s.path))["self_check"]
    with pytest.raises(StnDeployError, match="gives 1 names, the model has 2"):
        export_model(loaded, tmp_path / "n.onnx", output_names=["y"])


def test_batch_branch_refused_by_the_self_check(tmp_path):
    """Traced at batch 1 (TorchScript), the branch is baked: the file would be wrong at batch
    > 1; torch.export (the default) specialises it to batch 2: wrong at batch 1."""
    loaded = _loaded(BatchBranch)
    with pytest.raises(
        StnDeployError,
        match=r"self-check failed: .*'output' at batch 8.*exporter='dynamo'.*check=False",
    ):
        export_model(loaded, tmp_path / "m.onnx", exporter="torchscript")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StnDeployError, match="at batch 1 .*specialises"):  # dynamo: batch 2
        export_model(loaded, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_dynamo_two_grids_pooling_tuple(tmp_path):
    for model, names in ((TwoGridsPool, ["output"]), (DictOut, ["scores", "theta"])):
        loaded = _loaded(model)
        s = export_model(loaded, tmp_path / f"{model.__name__}.onnx")
        assert (s.outputs, s.opset, s.lowering) == (names, 17, "native")
        m = onnx.load(s.path)
        assert sum(n.op_type == "GridSample" for n in m.graph.node) == s.samplers
        assert not any(n.domain.startswith("stn_deploy") for n in m.graph.node)
        assert '"exporter": "dynamo"' in stn_metadata(m)["export_args"]
        _check_against_torch(loaded, s.path, names)


def test_dynamo_lowerings_and_refusals(tmp_path):
    loaded = _loaded(TwoGridsPool)
    s = export_model(loaded, tmp_path / "p.onnx", exporter="dynamo", lowering="portable")
    assert not any(n.op_type == "GridSample" for n in onnx.load(s.path).graph.node)
    _check_against_torch(loaded, s.path, ["output"])
    with pytest.raises(StnDeployError, match="opset 16 or newer, asked for 15"):
        export_model(loaded, tmp_path / "q.onnx", exporter="dynamo", opset=15, lowering="portable")
    with pytest.raises(
        StnDeployError, match="torch.export cannot trace .*data-dependent.*torchscript"
    ):
        export_model(_loaded(DataDependent), tmp_path / "d.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.io.npz", "p.onnx"]
