import pytest
import torch

import cvops  # noqa: F401  (registers torch.ops.cvops)

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def devices():
    """CPU always; CUDA as a cuda-marked param, skipped without a GPU."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
