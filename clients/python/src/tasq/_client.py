"""`Client` and `AsyncClient`: tasq's HTTP API, one method per operation, in a blocking and an
asyncio flavour. Each operation is built once (`_ops`) and sent by either flavour."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union
from urllib.parse import quote

import httpx

from ._errors import TasqError

Json = Any
#: A queue: its name, or `(name, type)` with type `activity` (the default) or `workflow`.
Queue = Union[str, "tuple[str, str]"]

TERMINAL = ("completed", "failed", "timed_out", "cancelled")


@dataclass(frozen=True)
class AddResult:
    """What an add answered: the task's id, and whether it existed already."""

    task_id: str
    duplicate: bool


@dataclass
class _Req:
    method: str
    path: str
    body: Optional[Json] = None
    params: Optional[Dict[str, Any]] = None


def _q(namespace: str, queue: Queue) -> str:
    name, kind = (queue, "activity") if isinstance(queue, str) else queue
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/task-queues/{quote(name, safe='')}/{kind}"


def _clean(params: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class _Ops:
    """The requests of every operation (shared by both flavours)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def add(self, queue: Queue, task_type: str, payload: Json, options: Dict[str, Any]) -> _Req:
        return _Req("POST", _q(self.namespace, queue) + "/tasks",
                    {"task_type": task_type, "payload": payload, **options})

    def add_many(self, queue: Queue, tasks: Sequence[Dict[str, Any]]) -> _Req:
        return _Req("POST", _q(self.namespace, queue) + "/tasks/batch", {"tasks": list(tasks)})

    def status(self, queue: Queue, task_id: str, wait_ms: int = 0) -> _Req:
        return _Req("GET", f"{_q(self.namespace, queue)}/tasks/{quote(task_id, safe='')}",
                    params={"wait_ms": wait_ms} if wait_ms else None)

    def cancel(self, queue: Queue, task_id: str) -> _Req:
        return _Req("DELETE", f"{_q(self.namespace, queue)}/tasks/{quote(task_id, safe='')}")

    def describe(self, name: str) -> _Req:
        return _Req("GET", f"/api/v1/namespaces/{quote(self.namespace, safe='')}/task-queues/"
                           f"{quote(name, safe='')}")

    def list_tasks(self, queue: Queue, filters: Dict[str, Any]) -> _Req:
        return _Req("GET", _q(self.namespace, queue) + "/tasks", params=_clean(filters))

    def explain(self, queue: Queue, task_id: str) -> _Req:
        return _Req("GET", f"{_q(self.namespace, queue)}/tasks/{quote(task_id, safe='')}/explain")

    def dead_letters(self, queue: Queue, limit: int, page_token: Optional[str]) -> _Req:
        return _Req("GET", _q(self.namespace, queue) + "/dead-letters",
                    params=_clean({"limit": limit, "page_token": page_token}))

    def redrive(self, queue: Queue, task_ids: Optional[Sequence[str]]) -> _Req:
        body = {"all": True} if task_ids is None else {"task_ids": list(task_ids)}
        return _Req("POST", _q(self.namespace, queue) + "/dead-letters/redrive", body)

    def set_config(self, queue: Queue, max_tasks_per_second: Optional[float],
                   burst: Optional[int]) -> _Req:
        body: Dict[str, Any] = {"max_tasks_per_second": max_tasks_per_second}
        if burst is not None:
            body["burst"] = burst
        return _Req("PUT", _q(self.namespace, queue) + "/config", body)

    def poll(self, queue: Queue, identity: str, options: Dict[str, Any]) -> _Req:
        return _Req("POST", _q(self.namespace, queue) + "/poll", {"identity": identity, **options})

    def settle(self, lease: str, op: str, body: Dict[str, Any]) -> _Req:
        return _Req("POST", f"/api/v1/leases/{quote(lease, safe='')}/{op}", body)


def _verify(ca_cert: Optional[str]) -> Union[bool, ssl.SSLContext]:
    """Certificates checked against `ca_cert` (a PEM file), or the system's authorities."""
    return ssl.create_default_context(cafile=ca_cert) if ca_cert else True


def _headers(api_key: Optional[str]) -> Dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _answer(res: httpx.Response) -> Json:
    try:
        body = res.json() if res.content else None
    except ValueError:
        body = None
    if res.status_code >= 300:
        raise TasqError.from_response(res.status_code, body, res.headers.get("retry-after"))
    return body


class Client:
    """tasq's HTTP API, blocking. `url` is the server (`http://127.0.0.1:7280`); `api_key` the
    bearer key when auth is on; `ca_cert` a PEM file of the authority that signed the
    server's certificate (HTTPS with a private CA)."""

    def __init__(self, url: str = "http://127.0.0.1:7280", *, api_key: Optional[str] = None,
                 namespace: str = "default", ca_cert: Optional[str] = None,
                 timeout: float = 90.0) -> None:
        self._ops = _Ops(namespace)
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=_headers(api_key),
                                  verify=_verify(ca_cert), timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, r: _Req) -> Json:
        try:
            res = self._http.request(r.method, r.path, json=r.body, params=r.params)
        except httpx.HTTPError as e:
            raise TasqError("unavailable", f"cannot reach tasq: {e}") from e
        return _answer(res)

    def add(self, queue: Queue, task_type: str, payload: Json = None, **options: Any) -> AddResult:
        """Adds a task; `options` are the add body's other fields (`task_id`, `priority`,
        `fairness_key`, `delay_ms`, `retry`, `route_to`, `headers`, …)."""
        return AddResult(**self._send(self._ops.add(queue, task_type, payload, options)))

    def add_many(self, queue: Queue, tasks: Sequence[Dict[str, Any]]) -> List[AddResult]:
        """Adds 1–1000 tasks (each an add body), all or nothing."""
        return [AddResult(**r) for r in self._send(self._ops.add_many(queue, tasks))["results"]]

    def status(self, queue: Queue, task_id: str) -> Dict[str, Any]:
        return self._send(self._ops.status(queue, task_id))

    def wait(self, queue: Queue, task_id: str, timeout: float = 60.0) -> Dict[str, Any]:
        """The task's status once it is completed, failed, timed out or cancelled, or when
        `timeout` seconds passed (then its state is still `pending` or `running`)."""
        wait_ms = max(0, min(60_000, int(timeout * 1000)))
        return self._send(self._ops.status(queue, task_id, wait_ms))

    def cancel(self, queue: Queue, task_id: str) -> Dict[str, Any]:
        return self._send(self._ops.cancel(queue, task_id))

    def describe(self, name: str) -> Dict[str, Any]:
        return self._send(self._ops.describe(name))

    def list_tasks(self, queue: Queue, state: str = "pending", **filters: Any) -> Dict[str, Any]:
        """One page of tasks by state; filters: `task_type`, `fairness_key`, `priority`,
        `limit`, `page_token`."""
        return self._send(self._ops.list_tasks(queue, {"state": state, **filters}))

    def explain(self, queue: Queue, task_id: str) -> Dict[str, Any]:
        return self._send(self._ops.explain(queue, task_id))

    def dead_letters(self, queue: Queue, limit: int = 100,
                     page_token: Optional[str] = None) -> Dict[str, Any]:
        return self._send(self._ops.dead_letters(queue, limit, page_token))

    def redrive(self, queue: Queue, task_ids: Optional[Sequence[str]] = None) -> int:
        """Puts dead letters back (`None`: all of them); answers how many."""
        return int(self._send(self._ops.redrive(queue, task_ids))["redriven"])

    def set_config(self, queue: Queue, max_tasks_per_second: Optional[float],
                   burst: Optional[int] = None) -> Dict[str, Any]:
        """The dispatch limit: `0` pauses, `None` removes it."""
        return self._send(self._ops.set_config(queue, max_tasks_per_second, burst))

    def poll(self, queue: Queue, identity: str, **options: Any) -> List[Dict[str, Any]]:
        """A long poll; options: `max_tasks`, `wait_ms`, `task_types`, `build_id`."""
        return self._send(self._ops.poll(queue, identity, options))["tasks"]

    def complete(self, lease: str, result: Json = None) -> Dict[str, Any]:
        return self._send(self._ops.settle(lease, "complete", {"result": result}))

    def fail(self, lease: str, message: str, *, kind: Optional[str] = None,
             non_retryable: bool = False, retry_after_ms: Optional[int] = None) -> Dict[str, Any]:
        body = _fail_body(message, kind, non_retryable, retry_after_ms)
        return self._send(self._ops.settle(lease, "fail", body))

    def heartbeat(self, lease: str, details: Json = None) -> Dict[str, Any]:
        return self._send(self._ops.settle(lease, "heartbeat", {"details": details}))


def _fail_body(message: str, kind: Optional[str], non_retryable: bool,
               retry_after_ms: Optional[int]) -> Dict[str, Any]:
    error: Dict[str, Any] = {"message": message}
    if kind:
        error["type"] = kind
    return {"error": error, "non_retryable": non_retryable, "retry_after_ms": retry_after_ms}


class AsyncClient:
    """tasq's HTTP API for asyncio: the methods of `Client`, awaited."""

    def __init__(self, url: str = "http://127.0.0.1:7280", *, api_key: Optional[str] = None,
                 namespace: str = "default", ca_cert: Optional[str] = None,
                 timeout: float = 90.0) -> None:
        self._ops = _Ops(namespace)
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=_headers(api_key),
                                       verify=_verify(ca_cert), timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, r: _Req) -> Json:
        try:
            res = await self._http.request(r.method, r.path, json=r.body, params=r.params)
        except httpx.HTTPError as e:
            raise TasqError("unavailable", f"cannot reach tasq: {e}") from e
        return _answer(res)

    async def add(self, queue: Queue, task_type: str, payload: Json = None,
                  **options: Any) -> AddResult:
        return AddResult(**await self._send(self._ops.add(queue, task_type, payload, options)))

    async def add_many(self, queue: Queue, tasks: Sequence[Dict[str, Any]]) -> List[AddResult]:
        answer = await self._send(self._ops.add_many(queue, tasks))
        return [AddResult(**r) for r in answer["results"]]

    async def status(self, queue: Queue, task_id: str) -> Dict[str, Any]:
        return await self._send(self._ops.status(queue, task_id))

    async def wait(self, queue: Queue, task_id: str, timeout: float = 60.0) -> Dict[str, Any]:
        wait_ms = max(0, min(60_000, int(timeout * 1000)))
        return await self._send(self._ops.status(queue, task_id, wait_ms))

    async def cancel(self, queue: Queue, task_id: str) -> Dict[str, Any]:
        return await self._send(self._ops.cancel(queue, task_id))

    async def describe(self, name: str) -> Dict[str, Any]:
        return await self._send(self._ops.describe(name))

    async def list_tasks(self, queue: Queue, state: str = "pending",
                         **filters: Any) -> Dict[str, Any]:
        return await self._send(self._ops.list_tasks(queue, {"state": state, **filters}))

    async def explain(self, queue: Queue, task_id: str) -> Dict[str, Any]:
        return await self._send(self._ops.explain(queue, task_id))

    async def dead_letters(self, queue: Queue, limit: int = 100,
                           page_token: Optional[str] = None) -> Dict[str, Any]:
        return await self._send(self._ops.dead_letters(queue, limit, page_token))

    async def redrive(self, queue: Queue, task_ids: Optional[Sequence[str]] = None) -> int:
        return int((await self._send(self._ops.redrive(queue, task_ids)))["redriven"])

    async def set_config(self, queue: Queue, max_tasks_per_second: Optional[float],
                         burst: Optional[int] = None) -> Dict[str, Any]:
        return await self._send(self._ops.set_config(queue, max_tasks_per_second, burst))

    async def poll(self, queue: Queue, identity: str, **options: Any) -> List[Dict[str, Any]]:
        return (await self._send(self._ops.poll(queue, identity, options)))["tasks"]

    async def complete(self, lease: str, result: Json = None) -> Dict[str, Any]:
        return await self._send(self._ops.settle(lease, "complete", {"result": result}))

    async def fail(self, lease: str, message: str, *, kind: Optional[str] = None,
                   non_retryable: bool = False,
                   retry_after_ms: Optional[int] = None) -> Dict[str, Any]:
        body = _fail_body(message, kind, non_retryable, retry_after_ms)
        return await self._send(self._ops.settle(lease, "fail", body))

    async def heartbeat(self, lease: str, details: Json = None) -> Dict[str, Any]:
        return await self._send(self._ops.settle(lease, "heartbeat", {"details": details}))
