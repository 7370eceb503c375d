"""`Worker`: runs handlers for a queue's tasks, streamed over tasq's WebSocket.

The worker gives the server its concurrency as credit, so it is never sent more tasks than it
can run; each finished task gives its credit back. While a handler runs, the worker
heartbeats the lease (every third of the task's heartbeat timeout, at most every 10 s) and
learns of a cancel from the answer: an async handler is then cancelled, a sync one (run in a
thread) is told through `task.cancelled`. A lost connection is opened again with backoff
(the server put the tasks of the old one back in the queue). SIGTERM or SIGINT ask the
server to send nothing more, let the running handlers finish and settle, then close.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import signal
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Optional, Union
from urllib.parse import quote, urlencode

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ._client import Queue, _q
from ._errors import NonRetryable

log = logging.getLogger("tasq.worker")

Handler = Callable[["Task"], Union[Any, Awaitable[Any]]]


@dataclass
class Task:
    """A task given to a handler."""

    task_id: str
    task_type: str
    payload: Any
    headers: Dict[str, str]
    attempt: int
    lease: str
    raw: Dict[str, Any]
    #: Set when the task was cancelled while it ran (a sync handler should check it).
    cancelled: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Runs `handlers` (task type → function) for the tasks of `queue`, `concurrency` at a
    time. A handler's return value is the task's result; an exception fails the attempt (it
    is retried per the task's policy), `NonRetryable` fails it for good."""

    def __init__(self, url: str, queue: Queue, handlers: Dict[str, Handler], *,
                 concurrency: int = 1, identity: Optional[str] = None,
                 api_key: Optional[str] = None, namespace: str = "default",
                 ca_cert: Optional[str] = None, build_id: Optional[str] = None,
                 shutdown_timeout: float = 30.0) -> None:
        if not handlers:
            raise ValueError("a worker needs at least one handler")
        if not 1 <= concurrency <= 1000:
            raise ValueError("concurrency must be 1–1000")
        self.handlers = handlers
        self.concurrency = concurrency
        self.identity = identity or f"{socket.gethostname()}@{os.getpid()}"
        self.shutdown_timeout = shutdown_timeout
        base = url.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        query = {"identity": self.identity, "task_types": ",".join(sorted(handlers))}
        if build_id:
            query["build_id"] = build_id
        self._url = f"{base}{_q(namespace, queue)}/connect?{urlencode(query, quote_via=quote)}"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._ssl = ssl.create_default_context(cafile=ca_cert) if base.startswith("wss") else None
        self._running: Dict[str, asyncio.Task[None]] = {}
        self._tasks: Dict[str, Task] = {}
        self._stopping: Optional[asyncio.Event] = None
        self._ws: Any = None

    def run(self) -> None:
        """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
        asyncio.run(self.run_async())

    def stop(self) -> None:
        """Asks a running worker to shut down gracefully (from its own event loop)."""
        if self._stopping is not None:
            self._stopping.set()

    async def run_async(self, install_signals: bool = True) -> None:
        """The worker's loop; returns after a graceful shutdown (`stop()` or a signal)."""
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                async with connect(self._url, additional_headers=self._headers, ssl=self._ssl,
                                   max_size=None) as ws:
                    self._ws = ws
                    backoff = 0.1
                    await self._serve(ws)
                    return
            except (OSError, ConnectionClosed, asyncio.TimeoutError) as e:
                self._abandon()
                if self._stopping.is_set():
                    return
                delay = backoff * (1 + random.random())
                log.warning("connection to tasq lost (%s); trying again in %.1f s", e, delay)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, 10.0)

    def _abandon(self) -> None:
        """The socket closed: its tasks went back to the queue; their handlers stop."""
        for t in self._running.values():
            t.cancel()
        self._running.clear()
        self._tasks.clear()

    async def _serve(self, ws: Any) -> None:
        await ws.send(json.dumps({"op": "credit", "n": self.concurrency}))
        stop = asyncio.ensure_future(self._stopping.wait())  # type: ignore[union-attr]
        try:
            while True:
                recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
                if recv in done:
                    self._frame(json.loads(recv.result()))
                    continue
                recv.cancel()
                await self._drain(ws)
                return
        finally:
            stop.cancel()

    async def _drain(self, ws: Any) -> None:
        """Graceful shutdown: no more tasks; running handlers finish and settle."""
        await ws.send(json.dumps({"op": "drain"}))
        if self._running:
            log.info("shutting down: waiting for %d running task(s)", len(self._running))
            pending = list(self._running.values())
            _, late = await asyncio.wait(pending, timeout=self.shutdown_timeout)
            for t in late:
                t.cancel()
        await ws.close()

    def _frame(self, frame: Dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "task":
            raw = frame["task"]
            task = Task(raw["task_id"], raw["task_type"], raw.get("payload"),
                        raw.get("headers") or {}, raw["attempt"], raw["lease"], raw)
            self._tasks[task.lease] = task
            self._running[task.lease] = asyncio.ensure_future(self._run(task))
        elif op == "heartbeat" and frame.get("cancel_requested"):
            task = self._tasks.get(frame.get("lease", ""))
            if task is not None and not task.cancelled.is_set():
                task.cancelled.set()
                running = self._running.get(task.lease)
                if running is not None:
                    running.cancel()
        elif op == "error":
            log.warning("tasq: %s", frame.get("error"))

    async def _run(self, task: Task) -> None:
        handler = self.handlers.get(task.task_type)
        beat = asyncio.ensure_future(self._heartbeat(task))
        try:
            if handler is None:
                raise NonRetryable(f"no handler for task type {task.task_type!r}")
            if inspect.iscoroutinefunction(handler):
                result = await handler(task)
            else:
                result = await asyncio.get_running_loop().run_in_executor(None, handler, task)
            await self._settle({"op": "complete", "lease": task.lease, "result": result})
        except asyncio.CancelledError:
            if task.cancelled.is_set():
                await self._settle(_fail(task, "cancelled while running", "Cancelled", True))
            else:
                raise
        except NonRetryable as e:
            await self._settle(_fail(task, str(e), type(e).__name__, True))
        except Exception as e:  # noqa: BLE001 - a handler's failure is the task's, reported
            await self._settle(_fail(task, str(e) or repr(e), type(e).__name__, False))
        finally:
            beat.cancel()
            self._running.pop(task.lease, None)
            self._tasks.pop(task.lease, None)

    async def _heartbeat(self, task: Task) -> None:
        timeout_ms = task.raw.get("heartbeat_timeout_ms") or task.raw.get("start_to_close_timeout_ms")
        every = max(0.2, min(10.0, (timeout_ms or 30_000) / 3000))
        while True:
            await asyncio.sleep(every)
            await self._settle({"op": "heartbeat", "lease": task.lease, "details": None})

    async def _settle(self, frame: Dict[str, Any]) -> None:
        try:
            await self._ws.send(json.dumps(frame))
        except ConnectionClosed:
            pass


def _fail(task: Task, message: str, kind: str, non_retryable: bool) -> Dict[str, Any]:
    return {"op": "fail", "lease": task.lease, "error": {"message": message, "type": kind},
            "non_retryable": non_retryable}
