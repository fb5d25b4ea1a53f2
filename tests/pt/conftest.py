import pytest

torch = pytest.importorskip('torch')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
