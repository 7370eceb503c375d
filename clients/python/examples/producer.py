import os
from tasq import Client

with Client(os.environ.get("TASQ_URL", "http://127.0.0.1:7280")) as client:
    added = client.add("emails", "send-email", {"to": "ada@example.com"})
    status = client.wait("emails", added.task_id, timeout=30)
    print(added.task_id, status["state"], status["result"])
