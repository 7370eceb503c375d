"""A Celery app whose broker is tasq's SQS endpoint (kombu's SQS transport, unchanged).

TASQ_SQS_URL is the endpoint (http://127.0.0.1:PORT); CELERY_RESULTS a folder for the
file-system result backend; CELERY_QUEUE the queue its tasks go to.
"""

import os
from urllib.parse import urlparse

from celery import Celery

endpoint = urlparse(os.environ["TASQ_SQS_URL"])
app = Celery("tasq_celery_test")
app.conf.update(
    broker_url=f"sqs://local:local@{endpoint.hostname}:{endpoint.port}",
    broker_transport_options={
        "region": "us-east-1",
        "is_secure": False,
        "visibility_timeout": 60,
        "polling_interval": 0.2,
        "wait_time_seconds": 1,
    },
    result_backend=f"file://{os.environ['CELERY_RESULTS']}",
    task_default_queue=os.environ["CELERY_QUEUE"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

ATTEMPTS = os.path.join(os.environ["CELERY_RESULTS"], "attempts")


@app.task
def add(x, y):
    return x + y


@app.task(bind=True, max_retries=3)
def flaky(self, key):
    """Fails on its first run, succeeds on the retry: counts runs in a file per key."""
    path = f"{ATTEMPTS}-{key}"
    runs = int(open(path).read()) + 1 if os.path.exists(path) else 1
    with open(path, "w") as f:
        f.write(str(runs))
    if runs == 1:
        raise self.retry(exc=RuntimeError("first run fails"), countdown=1)
    return runs


@app.task
def broken():
    raise ValueError("this task always fails")
