"""Fixtures shared by the training and CLI tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def restore_threads() -> Iterator[None]:
    """``train.threads`` sets torch's thread count process-wide; put it back after each module."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory shared by a module's tests, so the tiny dataset is generated once."""
    return tmp_path_factory.mktemp("data")
