"""Every action of the SQS endpoint through boto3, in both protocols where boto3 allows it
(AWS JSON 1.0 and, with botocore 1.31's model, the query protocol). What is checked is what
SQS documents: the answers' members, MD5 digests computed here from the documented encoding,
the typed exceptions and error codes, long-poll timing, visibility and redrive semantics.
"""

import hashlib
import json
import struct
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import client, unique


def md5_of_attributes(attrs):
    """MD5OfMessageAttributes as the SQS developer guide describes it."""
    def put(b):
        return struct.pack("!I", len(b)) + b
    buf = b""
    for name in sorted(attrs):
        a = attrs[name]
        buf += put(name.encode()) + put(a["DataType"].encode())
        if "StringValue" in a:
            buf += b"\x01" + put(a["StringValue"].encode())
        else:
            buf += b"\x02" + put(a["BinaryValue"])
    return hashlib.md5(buf).hexdigest()


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_queue_lifecycle_attributes_tags_and_listing(sqs):
    prefix = unique("life")
    url = sqs.create_queue(QueueName=prefix + "-a", Attributes={
        "VisibilityTimeout": "45", "DelaySeconds": "2", "MessageRetentionPeriod": "3600",
        "ReceiveMessageWaitTimeSeconds": "1", "MaximumMessageSize": "2048"},
        tags={"team": "payments"})["QueueUrl"]
    assert url.endswith("/000000000000/" + prefix + "-a")
    assert sqs.get_queue_url(QueueName=prefix + "-a")["QueueUrl"] == url
    # Same name and attributes: the same queue; different attributes: QueueNameExists.
    assert sqs.create_queue(QueueName=prefix + "-a", Attributes={"DelaySeconds": "2"})["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists):
        sqs.create_queue(QueueName=prefix + "-a", Attributes={"DelaySeconds": "3"})
    for s in "bcd":
        sqs.create_queue(QueueName=f"{prefix}-{s}")

    listed = sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]
    assert [u.rsplit("/", 1)[1] for u in listed] == [f"{prefix}-{s}" for s in "abcd"]
    pages = sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix,
                                                     PaginationConfig={"PageSize": 3})
    sizes = [len(p.get("QueueUrls", [])) for p in pages]
    assert sizes == [3, 1], sizes

    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "45" and attrs["DelaySeconds"] == "2"
    assert attrs["MaximumMessageSize"] == "2048" and attrs["MessageRetentionPeriod"] == "3600"
    assert attrs["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{prefix}-a"
    assert int(attrs["CreatedTimestamp"]) > 1_700_000_000
    assert "FifoQueue" not in attrs
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "10"})
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert one["Attributes"] == {"VisibilityTimeout": "10"}

    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "payments"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}

    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=prefix + "-a")
    with pytest.raises(sqs.exceptions.QueueDeletedRecently):
        sqs.create_queue(QueueName=prefix + "-a")


def test_send_receive_delete_with_attributes_and_batches(sqs):
    url = sqs.create_queue(QueueName=unique("msgs"))["QueueUrl"]
    attrs = {
        "kind": {"DataType": "String", "StringValue": "order"},
        "amount": {"DataType": "Number", "StringValue": "12.50"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffraw"},
        "trace.id": {"DataType": "String.custom", "StringValue": "t-1"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="é body ✓", MessageAttributes=attrs)
    assert sent["MD5OfMessageBody"] == hashlib.md5("é body ✓".encode()).hexdigest()
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attrs)

    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": f"m{i}", "MessageBody": f"batch {i}"} for i in range(9)])
    assert sorted(e["Id"] for e in batch["Successful"]) == [f"m{i}" for i in range(9)]
    assert not batch.get("Failed")

    got = []
    while len(got) < 10:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                AttributeNames=["All"], MessageAttributeNames=["All"])
        assert 1 <= len(r.get("Messages", [])) <= 10
        got += r["Messages"]
    first = next(m for m in got if m["MessageId"] == sent["MessageId"])
    assert first["Body"] == "é body ✓"
    assert first["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert first["MessageAttributes"] == attrs
    assert first["MD5OfMessageAttributes"] == md5_of_attributes(attrs)
    a = first["Attributes"]
    assert a["ApproximateReceiveCount"] == "1"
    assert abs(int(a["SentTimestamp"]) / 1000 - time.time()) < 120
    assert a["SenderId"] == "000000000000"

    # Only the attributes asked for, by name or prefix.
    sqs.send_message(QueueUrl=url, MessageBody="filtered", MessageAttributes=attrs)
    r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, MessageAttributeNames=["trace.*", "kind"],
                            AttributeNames=["ApproximateReceiveCount"])
    m = r["Messages"][0]
    assert set(m["MessageAttributes"]) == {"kind", "trace.id"}
    assert set(m["Attributes"]) == {"ApproximateReceiveCount"}
    got.append(m)

    vis = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "v1", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 300},
        {"Id": "v2", "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 300}])
    assert [e["Id"] for e in vis["Successful"]] == ["v1"]
    assert vis["Failed"][0]["Id"] == "v2" and vis["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"

    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got[:10])])
    assert len(deleted["Successful"]) == 10
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[10]["ReceiptHandle"])
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert left == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_long_poll_answers_as_soon_as_a_message_arrives(sqs):
    url = sqs.create_queue(QueueName=unique("poll"))["QueueUrl"]
    timer = threading.Timer(1.0, lambda: client(sqs.meta.endpoint_url).send_message(
        QueueUrl=url, MessageBody="late"))
    started = time.monotonic()
    timer.start()
    r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)
    took = time.monotonic() - started
    timer.join()
    assert r["Messages"][0]["Body"] == "late"
    assert took < 15, f"the receive waited {took:.1f} s for a message sent after 1 s"
    # Nothing there: the wait lasts about WaitTimeSeconds.
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
    assert time.monotonic() - started >= 1.5
    # Out-of-range values answer SQS's error.
    for bad in [{"WaitTimeSeconds": 21}, {"MaxNumberOfMessages": 11}, {"MaxNumberOfMessages": 0},
                {"VisibilityTimeout": 43201}]:
        with pytest.raises(ClientError) as e:
            sqs.receive_message(QueueUrl=url, **bad)
        assert code_of(e) == "InvalidParameterValue", bad


def test_visibility_timeout_hides_then_shows_again(sqs):
    url = sqs.create_queue(QueueName=unique("vis"), Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="v")
    m = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, VisibilityTimeout=1,
                            AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    # Hidden for the receive's one second, not the queue's 300.
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10,
                                AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert again["MessageId"] == m["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
    assert again["ReceiptHandle"] != m["ReceiptHandle"]
    with pytest.raises(sqs.exceptions.MessageNotInflight):
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"],
                                      VisibilityTimeout=10)
    # Deleting with a handle the message was received again since changes nothing.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"],
                                  VisibilityTimeout=0)
    third = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)["Messages"][0]
    assert third["MessageId"] == m["MessageId"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)


def test_errors_are_the_typed_exceptions(sqs):
    url = sqs.create_queue(QueueName=unique("errs"))["QueueUrl"]
    gone = url.rsplit("/", 1)[0] + "/no-such-queue"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as e:
        sqs.send_message(QueueUrl=gone, MessageBody="x")
    assert code_of(e) == "AWS.SimpleQueueService.NonExistentQueue"
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="nonsense")
    with pytest.raises(sqs.exceptions.EmptyBatchRequest):
        sqs.delete_message_batch(QueueUrl=url, Entries=[])
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": f"e{i}", "MessageBody": "x"} for i in range(11)])
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "same", "MessageBody": "x"}, {"Id": "same", "MessageBody": "y"}])
    with pytest.raises(sqs.exceptions.InvalidBatchEntryId):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "no spaces", "MessageBody": "x"}])
    with pytest.raises(sqs.exceptions.BatchRequestTooLong):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": f"b{i}", "MessageBody": "x" * 100_000} for i in range(3)])
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["NoSuchAttribute"])
    with pytest.raises(ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "50000"})
    assert code_of(e) == "InvalidAttributeValue"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x" * 262_145)
    assert code_of(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="bell \x07")
    assert code_of(e) == "InvalidMessageContents"
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes={
            "n": {"DataType": "Number", "StringValue": "twelve"}})
    assert code_of(e) == "InvalidParameterValue"
    sqs.purge_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=url)


def test_dead_letters_redrive_policy_and_move_back(sqs, open_tasq):
    dlq = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = unique("src")
    src = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})})["QueueUrl"]
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])
                        ["Attributes"]["RedrivePolicy"])
    assert policy == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]

    sqs.send_message(QueueUrl=src, MessageBody="poison")
    m = sqs.receive_message(QueueUrl=src, WaitTimeSeconds=5)["Messages"][0]
    sqs.change_message_visibility(QueueUrl=src, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    deadline = time.time() + 20
    while sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"]["ApproximateNumberOfMessages"] != "1":
        assert time.time() < deadline, "the message never died"
        time.sleep(0.1)
    # The dead letter is tasq's, listed by its API with the reason.
    dead = open_tasq.get(f"/api/v1/namespaces/default/task-queues/{name}/activity/dead-letters")
    assert [d["task_id"] for d in dead["dead_letters"]] == [m["MessageId"]]
    assert "Messages" not in sqs.receive_message(QueueUrl=src, WaitTimeSeconds=0)

    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    assert handle
    tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
    assert tasks[0]["Status"] == "COMPLETED" and tasks[0]["ApproximateNumberOfMessagesMoved"] == 1
    back = sqs.receive_message(QueueUrl=src, WaitTimeSeconds=5,
                               AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert back["Body"] == "poison" and back["Attributes"]["ApproximateReceiveCount"] == "1"


def test_messages_cross_between_sqs_and_tasqs_own_api(sqs, open_tasq):
    name = unique("cross")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    q = f"/api/v1/namespaces/default/task-queues/{name}/activity"
    sent = sqs.send_message(QueueUrl=url, MessageBody="from sqs", MessageGroupId="tenant-a")
    listed = open_tasq.get(q + "/tasks")["tasks"]
    assert [(t["task_id"], t["payload"], t["fairness_key"]) for t in listed] == [
        (sent["MessageId"], "from sqs", "tenant-a")]
    open_tasq.post(q + "/tasks", {"task_type": "native", "task_id": "from-tasq",
                                  "payload": {"n": 1}})
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                              AttributeNames=["MessageGroupId"])["Messages"]
    while len(got) < 2:
        got += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    bodies = {m["MessageId"]: m["Body"] for m in got}
    assert bodies[sent["MessageId"]] == "from sqs"
    # A task's payload is received as the JSON text it was added with.
    assert json.loads(bodies["from-tasq"]) == {"n": 1}
    for m in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    status = open_tasq.get(q + "/tasks/from-tasq")
    assert status["state"] == "completed"


def test_fifo_queue_deduplicates_and_tells_group_and_sequence(sqs):
    url = sqs.create_queue(QueueName=unique("jobs") + ".fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x")
    assert code_of(e) == "MissingParameter"
    a = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    b = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    c = sqs.send_message(QueueUrl=url, MessageBody="other", MessageGroupId="g",
                         MessageDeduplicationId="explicit-1")
    assert a["MessageId"] == b["MessageId"] != c["MessageId"]
    assert len(a["SequenceNumber"]) == 20
    # One message of the group at a time, in the order sent.
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                              AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["same"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5,
                              AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["other"]
    explicit = got[0]["Attributes"]
    assert explicit["MessageGroupId"] == "g"
    assert explicit["MessageDeduplicationId"] == "explicit-1"
    with pytest.raises(ClientError) as e:
        sqs.create_queue(QueueName=unique("plain") + ".fifo")
    assert code_of(e) == "InvalidParameterValue"


@pytest.mark.parametrize("protocol", ["json", "query"])
def test_signed_requests_act_with_the_keys_roles(signed_tasq, protocol):
    full_id, full_secret, _ = signed_tasq.credentials["full"]
    c = client(signed_tasq.sqs, protocol, full_id, full_secret)
    url = c.create_queue(QueueName=unique("signed"))["QueueUrl"]
    c.send_message(QueueUrl=url, MessageBody="signed")
    m = c.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"][0]
    c.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    wrong = client(signed_tasq.sqs, protocol, full_id, full_secret + "x")
    with pytest.raises(ClientError) as e:
        wrong.list_queues()
    assert code_of(e) == "SignatureDoesNotMatch"
    stranger = client(signed_tasq.sqs, protocol, "AKIAUNKNOWN000000000", "s" * 30)
    with pytest.raises(ClientError) as e:
        stranger.list_queues()
    assert code_of(e) == "InvalidClientTokenId"

    prod_id, prod_secret, _ = signed_tasq.credentials["producer"]
    producer = client(signed_tasq.sqs, protocol, prod_id, prod_secret)
    assert producer.get_queue_url(QueueName=url.rsplit("/", 1)[1])["QueueUrl"] == url
    producer.send_message(QueueUrl=url, MessageBody="from a producer")
    with pytest.raises(ClientError) as e:
        producer.receive_message(QueueUrl=url)
    assert code_of(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        producer.purge_queue(QueueUrl=url)
    assert code_of(e) == "AccessDenied"
