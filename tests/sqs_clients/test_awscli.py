"""The AWS CLI's `aws sqs` commands against the endpoint, as a user would type them."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import unique

AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or "aws"


def aws(tasq, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local",
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_MAX_ATTEMPTS="1")
    r = subprocess.run([AWS, "--endpoint-url", tasq.sqs, "--output", "json", "sqs", *args],
                       env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


def ok(tasq, *args):
    code, out, err = aws(tasq, *args)
    assert code == 0, f"aws sqs {' '.join(args)}: {err}"
    return out


def test_aws_sqs_commands(open_tasq):
    name = unique("cli")
    url = ok(open_tasq, "create-queue", "--queue-name", name,
             "--attributes", "VisibilityTimeout=60,DelaySeconds=0")["QueueUrl"]
    assert ok(open_tasq, "get-queue-url", "--queue-name", name)["QueueUrl"] == url
    assert url in ok(open_tasq, "list-queues", "--queue-name-prefix", name)["QueueUrls"]

    sent = ok(open_tasq, "send-message", "--queue-url", url, "--message-body", "from the cli",
              "--message-attributes", '{"source": {"DataType": "String", "StringValue": "cli"}}')
    assert len(sent["MD5OfMessageBody"]) == 32
    ok(open_tasq, "send-message-batch", "--queue-url", url, "--entries",
       json.dumps([{"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two"}]))

    attrs = ok(open_tasq, "get-queue-attributes", "--queue-url", url,
               "--attribute-names", "All")["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "3"
    assert attrs["VisibilityTimeout"] == "60"

    got = []
    while len(got) < 3:
        got += ok(open_tasq, "receive-message", "--queue-url", url, "--max-number-of-messages", "10",
                  "--wait-time-seconds", "2", "--message-attribute-names", "All").get("Messages", [])
    first = next(m for m in got if m["MessageId"] == sent["MessageId"])
    assert first["Body"] == "from the cli"
    assert first["MessageAttributes"]["source"]["StringValue"] == "cli"
    ok(open_tasq, "change-message-visibility", "--queue-url", url,
       "--receipt-handle", got[0]["ReceiptHandle"], "--visibility-timeout", "120")
    for m in got:
        ok(open_tasq, "delete-message", "--queue-url", url, "--receipt-handle", m["ReceiptHandle"])
    attrs = ok(open_tasq, "get-queue-attributes", "--queue-url", url, "--attribute-names",
               "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")["Attributes"]
    assert attrs == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}

    ok(open_tasq, "set-queue-attributes", "--queue-url", url, "--attributes", "DelaySeconds=5")
    ok(open_tasq, "send-message", "--queue-url", url, "--message-body", "later")
    attrs = ok(open_tasq, "get-queue-attributes", "--queue-url", url, "--attribute-names",
               "ApproximateNumberOfMessagesDelayed")["Attributes"]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"
    ok(open_tasq, "purge-queue", "--queue-url", url)
    ok(open_tasq, "delete-queue", "--queue-url", url)

    code, _, err = aws(open_tasq, "get-queue-url", "--queue-name", name)
    assert code != 0 and "NonExistentQueue" in err, err
    code, _, err = aws(open_tasq, "receive-message", "--queue-url", url + "-missing")
    assert code != 0 and "NonExistentQueue" in err, err
