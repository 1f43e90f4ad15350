import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from cases import CASES  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_report_header(config):
    return f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"


@pytest.fixture(params=list(CASES.values()), ids=list(CASES))
def case(request):
    return request.param
