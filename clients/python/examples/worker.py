import os
from tasq import Worker


async def send_email(task):
    print("sending to", task.payload["to"], flush=True)
    return {"sent": True}


Worker(os.environ.get("TASQ_URL", "http://127.0.0.1:7280"), "emails",
       {"send-email": send_email}, concurrency=4).run()
