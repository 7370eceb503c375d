"""The Python client against a real tasq: every Client method (blocking and asyncio), errors
as TasqError with the API's code, the Worker (results, retries, dead letters, sync handlers,
concurrency as credit, cancellation, reconnection, graceful stop), and the README's examples
run as written."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tasq import AsyncClient, Client, NonRetryable, TasqError, Worker

HERE = Path(__file__).resolve().parent.parent


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_client_operations(url):
    q = unique("ops")
    with Client(url) as c:
        a = c.add(q, "resize", {"w": 10}, task_id="img-1", priority=2, headers={"trace": "t"})
        assert (a.task_id, a.duplicate) == ("img-1", False)
        assert c.add(q, "resize", {"w": 10}, task_id="img-1").duplicate
        many = c.add_many(q, [{"task_type": "resize", "payload": i} for i in range(3)])
        assert len(many) == 3 and not any(r.duplicate for r in many)
        assert c.status(q, "img-1")["state"] == "pending"
        listed = c.list_tasks(q, task_type="resize", priority=2)
        assert [t["task_id"] for t in listed["tasks"]] == ["img-1"]
        assert c.explain(q, "img-1")["reasons"][0]["code"] == "no_poller"
        assert c.describe(q)["types"]["activity"]["backlog_count"] == 4

        assert c.set_config(q, 0)["max_tasks_per_second"] == 0
        assert c.poll(q, "w1", max_tasks=1, wait_ms=0) == []
        c.set_config(q, None)
        tasks = c.poll(q, "w1", max_tasks=2, wait_ms=1000)
        assert tasks[0]["task_id"] == "img-1" and tasks[0]["headers"] == {"trace": "t"}
        assert c.heartbeat(tasks[0]["lease"], {"done": 0.5})["cancel_requested"] is False
        assert c.complete(tasks[0]["lease"], {"ok": True})["state"] == "completed"
        assert c.wait(q, "img-1", timeout=1)["result"] == {"ok": True}
        failed = c.fail(tasks[1]["lease"], "no disk", kind="IOError", non_retryable=True)
        assert failed["state"] == "failed"
        dead = c.dead_letters(q)["dead_letters"]
        assert [d["last_error"]["message"] for d in dead] == ["no disk"]
        assert c.redrive(q) == 1
        assert c.cancel(q, tasks[1]["task_id"])["state"] == "cancelled"
        # A wait that runs out answers the state so far.
        started = time.monotonic()
        assert c.wait(q, many[2].task_id, timeout=0.5)["state"] == "pending"
        assert time.monotonic() - started >= 0.4

        with pytest.raises(TasqError) as e:
            c.status(q, "nope")
        assert (e.value.code, e.value.status) == ("not_found", 404)
        with pytest.raises(TasqError) as e:
            c.add(q, "t", priority=9)
        assert e.value.code == "invalid_argument" and "priority" in e.value.message
        with pytest.raises(TasqError) as e:
            c.complete("garbage")
        assert e.value.code == "lease_lost"
        # Workflow queues are named with their type.
        assert c.add((q, "workflow"), "flow").task_id
        assert c.describe(q)["types"]["workflow"]["backlog_count"] == 1


def test_async_client(url):
    async def main():
        q = unique("async")
        async with AsyncClient(url) as c:
            added = await c.add(q, "t", [1, 2])
            [task] = await c.poll(q, "aw", wait_ms=2000)
            assert task["payload"] == [1, 2]
            await c.complete(task["lease"], "done")
            assert (await c.wait(q, added.task_id))["result"] == "done"
            with pytest.raises(TasqError) as e:
                await c.status(q, "missing")
            assert e.value.code == "not_found"
            assert (await c.list_tasks(q, "completed"))["tasks"][0]["task_id"] == added.task_id
    asyncio.run(main())


def test_unreachable_server_is_a_tasq_error():
    with Client("http://127.0.0.1:9", timeout=2) as c, pytest.raises(TasqError) as e:
        c.status("q", "x")
    assert e.value.code == "unavailable"


class Running:
    """A Worker on its own thread and event loop, stopped gracefully at the end."""

    def __init__(self, worker):
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.loop.run_until_complete(self.worker.run_async(install_signals=False))

    def stop(self, timeout=30):
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"


def test_worker_results_retries_dead_letters_and_sync_handlers(url):
    q = unique("work")
    runs = {}

    async def flaky(task):
        runs[task.task_id] = runs.get(task.task_id, 0) + 1
        if task.attempt == 1:
            raise RuntimeError("first attempt fails")
        return {"attempt": task.attempt}

    async def poison(task):
        raise NonRetryable("bad input")

    def blocking(task):  # a plain function runs in a thread
        time.sleep(0.05)
        return task.payload * 2

    w = Running(Worker(url, q, {"flaky": flaky, "poison": poison, "blocking": blocking},
                       concurrency=4))
    try:
        with Client(url) as c:
            retry = {"initial_interval_ms": 1, "maximum_interval_ms": 1}
            f = c.add(q, "flaky", retry=retry)
            p = c.add(q, "poison")
            b = c.add(q, "blocking", 21)
            done = c.wait(q, f.task_id, timeout=30)
            assert (done["state"], done["result"]) == ("completed", {"attempt": 2})
            assert runs[f.task_id] == 2
            dead = c.wait(q, p.task_id, timeout=30)
            assert dead["state"] == "failed"
            assert dead["last_error"] == {"message": "bad input", "type": "NonRetryable"}
            assert c.wait(q, b.task_id, timeout=30)["result"] == 42
    finally:
        w.stop()


def test_worker_concurrency_is_its_credit_and_cancel_stops_a_handler(url):
    q = unique("conc")
    state = {"now": 0, "max": 0}
    release = threading.Event()

    async def slow(task):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        try:
            while not release.is_set():
                await asyncio.sleep(0.05)
        finally:
            state["now"] -= 1
        return "ok"

    w = Running(Worker(url, q, {"slow": slow}, concurrency=3))
    try:
        with Client(url) as c:
            ids = [c.add(q, "slow", heartbeat_timeout_ms=600).task_id for _ in range(5)]
            deadline = time.time() + 20
            while state["max"] < 3:
                assert time.time() < deadline, state
                time.sleep(0.05)
            time.sleep(0.5)
            assert state["max"] == 3, "never more tasks than the credit given"
            running = [t["task_id"] for t in c.list_tasks(q, "running")["tasks"]]
            assert len(running) == 3
            # Cancelled while it runs: the handler is stopped and the task ends cancelled.
            c.cancel(q, running[0])
            assert c.wait(q, running[0], timeout=20)["state"] == "cancelled"
            release.set()
            for i in ids:
                if i != running[0]:
                    assert c.wait(q, i, timeout=30)["state"] == "completed"
    finally:
        release.set()
        w.stop()


def test_worker_reconnects_and_stops_gracefully(server, url):
    q = unique("recon")
    started = threading.Event()

    async def work(task):
        started.set()
        await asyncio.sleep(1.0)
        return task.payload

    w = Running(Worker(url, q, {"work": work}))
    try:
        with Client(url) as c:
            assert c.wait(q, c.add(q, "work", 1).task_id, timeout=30)["result"] == 1
        server.restart()  # kill -9 and start again: the worker's socket drops
        with Client(url) as c:
            assert c.wait(q, c.add(q, "work", 2).task_id, timeout=60)["result"] == 2
            # A stop while a task runs lets it finish and settle first.
            started.clear()
            t = c.add(q, "work", 3)
            assert started.wait(30)
            w.stop()
            assert c.status(q, t.task_id)["state"] == "completed"
    finally:
        if w.thread.is_alive():
            w.stop()


def code_blocks(readme):
    return re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)


def test_readme_examples_run_as_written(url):
    producer, worker = code_blocks(HERE / "README.md")
    assert producer == (HERE / "examples" / "producer.py").read_text()
    assert worker == (HERE / "examples" / "worker.py").read_text()
    assert len(producer.splitlines()) < 20 and len(worker.splitlines()) < 20
    env = dict(os.environ, TASQ_URL=url)
    w = subprocess.Popen([sys.executable, "-c", worker], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        out = subprocess.run([sys.executable, "-c", producer], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[1:] == ["completed", "{'sent':", "True}"], out.stdout
    finally:
        w.send_signal(signal.SIGTERM)
        printed, _ = w.communicate(timeout=30)
    assert w.returncode == 0, printed
    assert "sending to ada@example.com" in printed
