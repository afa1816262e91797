"""Issue 13: a corpus of third-party-style warping models (tests/corpus/models.py: kornia and
hand-written STNs) through our exporter in every lowering, compared with torch on ONNX Runtime
CPU at batch 1 and 3 (``atol = 1e-4 * max(1, max|ref|)``).

Every model exports with the default exporter (torch.export, ``dynamo``) except those listed in
:data:`DYNAMO_REFUSES`, which its self-check must refuse with one line and no file, and which the
TorchScript exporter must then export correctly. The models of :data:`TORCHSCRIPT_REFUSES` are
refused by ``--exporter torchscript`` in one line. Nothing is skipped silently: a kornia
function missing from the installed kornia is a skip that names it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

from stn_deploy.errors import StnDeployError  # noqa: E402
from stn_deploy.pytorch.exporter import export_model  # noqa: E402
from stn_deploy.pytorch.models.loading import load_model  # noqa: E402
from tests.corpus.harness import LOWERINGS, compare, onnx_files, quiet  # noqa: E402
from tests.corpus.models import CORPUS, available, by_name  # noqa: E402

#: torch's TorchScript exporter cannot export adaptive_avg_pool2d at a non-factor size (7 -> 3);
#: in stn-two-grids the pool is at a factor size but follows the first sampler, whose placeholder
#: output has unknown H, W in the TorchScript graph ("input size not accessible")
TORCHSCRIPT_REFUSES = {
    "stn-pool-7to3": "adaptive_avg_pool2d",
    "stn-tuple-output": "adaptive_avg_pool2d",
    "stn-out-size": "adaptive_avg_pool2d",
    "stn-two-grids": "adaptive_avg_pool2d",
}
#: torch.export specialises kornia RandomAffine's batch (a guard batch == 2): the file would only
#: run at batch 2, so the self-check (batch 1 and 8) refuses it; TorchScript traces it correctly
DYNAMO_REFUSES = {"kornia-random-affine": "batch"}
#: the longest exports here (kornia's matrix code traces into thousands of nodes; dynamo)
SLOW = {"kornia-rotate-scale-translate", "kornia-random-affine", "kornia-crop-and-resize"}


def _params():
    for e in CORPUS:
        slow = e.name in SLOW or e.name in DYNAMO_REFUSES
        for lw in LOWERINGS:
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(e.name, lw, id=f"{e.name}-{lw}", marks=marks)


def _loaded(name: str):
    entry = by_name(name)
    reason = available(entry)
    if reason:
        pytest.skip(f"{name}: {reason}")
    return entry, load_model(entry.ref, input_shape=entry.input_shape)


def _assert_refused(exc: StnDeployError, out, expect: str) -> None:
    text = str(exc)
    assert "\n" not in text.strip(), text
    assert expect in text, text
    assert onnx_files(out) == [], "a refused export left a file"


def _assert_agrees(path, model, shape) -> None:
    agrees, err, note = compare(path, model, shape)
    assert agrees, f"{path}: {note or err}"


@pytest.mark.parametrize("name,lowering", list(_params()))
def test_corpus_export_matches_torch(name, lowering, tmp_path):
    entry, loaded = _loaded(name)
    exporter = None  # the default: dynamo
    if name in DYNAMO_REFUSES:
        with quiet(), pytest.raises(StnDeployError) as info:
            export_model(loaded, tmp_path, lowering=lowering)
        _assert_refused(info.value, tmp_path, DYNAMO_REFUSES[name])
        exporter = "torchscript"
    with quiet():
        result = export_model(loaded, tmp_path, lowering=lowering, exporter=exporter)
    assert result.lowering == lowering
    assert onnx_files(tmp_path) == [result.path.rsplit("/", 1)[-1]]
    _assert_agrees(result.path, loaded.model, entry.input_shape)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHSCRIPT_REFUSES))
def test_torchscript_refuses_in_one_line(name, tmp_path):
    """What the TorchScript exporter cannot export (adaptive pooling at a non-factor size, a
    pool after a sampler) is one line naming the op and no file."""
    _, loaded = _loaded(name)
    with quiet(), pytest.raises(StnDeployError) as info:
        export_model(loaded, tmp_path, lowering="native", exporter="torchscript")
    _assert_refused(info.value, tmp_path, TORCHSCRIPT_REFUSES[name])


def test_corpus_is_complete():
    names = {e.name for e in CORPUS}
    assert len(names) == len(CORPUS)
    assert {"stn-pool-7to3", "stn-tuple-output", "stn-two-grids", "stn-out-size"} <= names
    assert sum(n.startswith("affine-") for n in names) == 9  # every mode x padding
    assert sum(e.family == "kornia" for e in CORPUS) == 7
    assert set(TORCHSCRIPT_REFUSES) <= names and set(DYNAMO_REFUSES) <= names and SLOW <= names
    assert any(len(e.input_shape) == 4 for e in CORPUS)  # a volume (5-D grid_sample)


def test_factory_file_loads_as_users_name_it():
    """The corpus is loaded by file path, as ``stn-deploy export tests/corpus/models.py:NAME``."""
    entry, loaded = _loaded("affine-bilinear-zeros")
    assert loaded.config.input_shape == list(entry.input_shape)
    assert entry.ref.endswith("tests/corpus/models.py:affine_bilinear_zeros")


#: stock files lowered by `stn-deploy lower` (the benchmark does the whole corpus)
STOCK_LOWERED = ("stn-two-grids", "affine-bicubic-reflection", "stn-volumetric")
_STOCK: dict[str, object] = {}


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("name", STOCK_LOWERED)
def test_stock_export_lowered_matches_torch(name, lowering, tmp_path_factory):
    """A file from stock ``torch.onnx.export(dynamo=True)`` through ``stn-deploy lower``: every
    lowering agrees with torch at batch 1 and 3 (chained samplers, bicubic, a volume)."""
    pytest.importorskip("onnxscript")
    from stn_deploy.export.lower import lower_file
    from stn_deploy.pytorch.baselines import stock_export

    entry, loaded = _loaded(name)
    if name not in _STOCK:
        path = tmp_path_factory.mktemp("stock") / f"{name}.onnx"
        with quiet():
            stock_export(loaded.model, entry.input_shape, path)
        _STOCK[name] = path
    out = tmp_path_factory.mktemp("lowered") / f"{name}-{lowering}.onnx"
    lower_file(_STOCK[name], out, lowering=lowering)
    _assert_agrees(out, loaded.model, entry.input_shape)
