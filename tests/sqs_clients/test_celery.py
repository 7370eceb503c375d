"""Celery with tasq as its broker over kombu's SQS transport, unchanged: a worker runs the
tasks a producer sends, a failing task retries and then succeeds, a broken one ends FAILURE,
and every message is deleted once its task is done."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest

from conftest import unique

HERE = Path(__file__).resolve().parent


@pytest.fixture
def celery_env(open_tasq, monkeypatch):
    results = tempfile.TemporaryDirectory(prefix="tasq-celery-")
    queue = unique("celery")
    env = {"TASQ_SQS_URL": open_tasq.sqs, "CELERY_RESULTS": results.name, "CELERY_QUEUE": queue}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(HERE))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool=solo",
         "--loglevel=INFO", "-Q", queue, "--without-heartbeat", "--without-gossip",
         "--without-mingle"],
        cwd=HERE, env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    yield queue, worker
    worker.terminate()
    try:
        out, _ = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, _ = worker.communicate()
    print(out[-4000:])
    results.cleanup()


def test_a_celery_worker_runs_tasks_through_tasq(open_tasq, celery_env):
    queue, worker = celery_env
    import celery_app

    total = celery_app.add.delay(2, 3)
    assert total.get(timeout=90) == 5
    many = [celery_app.add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=90) for r in many] == [2 * i for i in range(10)]

    retried = celery_app.flaky.delay("k1")
    assert retried.get(timeout=90) == 2, "one failed run, then the retry"

    broken = celery_app.broken.delay()
    with pytest.raises(ValueError, match="always fails"):
        broken.get(timeout=90)
    assert broken.state == "FAILURE"

    # The queue is a tasq queue: its tasks all completed, nothing waits or runs.
    sqs = boto3.client("sqs", endpoint_url=open_tasq.sqs, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="y")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    deadline = time.time() + 30
    while True:
        a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        if a == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}:
            break
        assert time.time() < deadline, f"messages left behind: {a}"
        time.sleep(0.2)
    done = open_tasq.get(f"/api/v1/namespaces/default/task-queues/{queue}/activity/tasks?state=completed&limit=1000")
    assert len(done["tasks"]) >= 14, done
    assert worker.poll() is None, "the worker is still running"
