import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_threads():
    # Tests run under xdist with one worker per core: keep torch to one thread per worker.
    torch.set_num_threads(1)
    yield
