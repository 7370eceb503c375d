"""tasq's Python client: `Client` / `AsyncClient` for the HTTP API, `Worker` to run handlers
for a queue's tasks over the WebSocket.

    from tasq import Client, Worker
"""

from ._client import TERMINAL, AddResult, AsyncClient, Client
from ._errors import NonRetryable, TasqError
from ._worker import Task, Worker

__all__ = ["AddResult", "AsyncClient", "Client", "NonRetryable", "Task", "TasqError",
           "TERMINAL", "Worker"]
__version__ = "0.1.0"
