import os

import pytest
import torch


def pytest_report_header(config):
    return f"torch CPU kernels: {torch.backends.cpu.get_cpu_capability()}"


def pytest_configure(config):
    # make test-portable forces torch's generic kernels; a torch that ignored the request would
    # quietly run the same kernels as make test
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    got = torch.backends.cpu.get_cpu_capability()
    if wanted and wanted.upper() != got.upper():
        raise pytest.UsageError(f"ATEN_CPU_CAPABILITY={wanted} but torch runs its {got} kernels")


@pytest.fixture(autouse=True)
def _torch_threads():
    # Tests run under xdist with one worker per core: keep torch to one thread per worker.
    torch.set_num_threads(1)
    yield


class FakeClock:
    """A clock for timing code that only moves when told: ``sleep(s)`` advances it by exactly
    ``s``, nothing else does. Give it where the library takes ``clock=`` (``CallTimer``,
    ``time_calls``, ``median_us``), so that timing tests count calls and check statistics
    exactly instead of sleeping and hoping a loaded CI machine keeps up."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def plain_native(tmp_path_factory):
    """The committed checkpoint (exported/mnist-affine-rts.pt) exported in the native lowering
    with no graph rewrites (``optimize="none"``; the committed ort-cpu files carry the exact
    ones), with its golden bundle beside it: what the optimize tests rewrite."""
    pytest.importorskip("torch")
    from stn_deploy.pytorch.exporter import export_model
    from stn_deploy.pytorch.models import load_checkpoint

    out = tmp_path_factory.mktemp("plain") / "mnist-affine-native.onnx"
    loaded = load_checkpoint("exported/mnist-affine-rts.pt")
    export_model(loaded, out, lowering="native", optimize="none")
    return out
