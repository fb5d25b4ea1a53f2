import pytest

torch = pytest.importorskip('torch')
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
