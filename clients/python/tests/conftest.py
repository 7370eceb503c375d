"""A real tasq for the client's tests (tests/tasq_process.py at the repository's root starts
TASQ_BIN, default target/debug/tasq), on a fixed free port so it can be restarted."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from tasq_process import Process, free_address  # noqa: E402


@pytest.fixture(scope="module")
def server():
    process = Process("", bind=free_address())
    yield process
    process.stop()


@pytest.fixture
def url(server):
    return server.urls["tasq listening on "]
