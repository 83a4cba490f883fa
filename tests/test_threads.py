"""torch_threads: a block's torch thread count, and the caller's count afterwards."""

from __future__ import annotations

import pytest
import torch

from feddistill.threads import torch_threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_block_runs_on_the_count_and_the_previous_count_comes_back(two_threads):
    # Execute
    with torch_threads(1):
        inside = torch.get_num_threads()
    # Assert
    assert inside == 1
    assert torch.get_num_threads() == 2


def test_previous_count_comes_back_when_the_block_raises(two_threads):
    # Execute
    with pytest.raises(KeyError), torch_threads(1):
        raise KeyError("x")
    # Assert
    assert torch.get_num_threads() == 2


def test_count_below_one_is_an_error_naming_it(two_threads):
    with (
        pytest.raises(ValueError, match=r"torch thread count must be >= 1, got 0"),
        torch_threads(0),
    ):
        pass
    assert torch.get_num_threads() == 2
