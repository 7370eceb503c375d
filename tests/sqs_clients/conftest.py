"""Fixtures for the SQS endpoint driven by real clients (boto3, the AWS CLI, Celery).

A tasq with `[sqs] enabled` is started from TASQ_BIN (default target/debug/tasq) on free
ports, once with auth off (signatures unchecked, as ElasticMQ does) and once with auth on
(Signature V4 by the access keys of `[[sqs.credentials]]`). boto3 clients come in both of
SQS's protocols: AWS JSON 1.0 (what botocore sends today) and the query protocol, by loading
the SQS model of botocore 1.31.0 (the last query one; TASQ_SQS_QUERY_MODEL names the folder
that holds sqs/2012-11-05/service-2.json, fetched by .ci/sqs-check).
"""

import hashlib
import json
import os
import secrets
import sys
import urllib.request
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasq_process import ROOT, Process  # noqa: E402

QUERY_MODEL = os.environ.get("TASQ_SQS_QUERY_MODEL", str(ROOT / "target" / "sqs-query-model"))
REGION = "us-east-1"


class Tasq:
    """A running tasq: the base URLs of its API and of its SQS endpoint."""

    def __init__(self, api, sqs, credentials):
        self.api = api
        self.sqs = sqs
        self.credentials = credentials

    def get(self, path, key=None):
        req = urllib.request.Request(self.api + path)
        if key:
            req.add_header("Authorization", "Bearer " + key)
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read())

    def post(self, path, body, key=None):
        req = urllib.request.Request(self.api + path, data=json.dumps(body).encode(),
                                     method="POST")
        req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", "Bearer " + key)
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read())


LISTENING = ("tasq listening on ", "tasq SQS endpoint listening on ")


def start(config_text, credentials=None):
    process = Process(config_text, LISTENING)
    return process, Tasq(process.urls[LISTENING[0]], process.urls[LISTENING[1]], credentials)


@pytest.fixture(scope="session")
def open_tasq():
    """tasq with the SQS endpoint and auth off."""
    process, tasq = start('[sqs]\nenabled = true\nbind = "127.0.0.1:0"\n')
    yield tasq
    process.stop()


def access_key():
    return "AKIA" + secrets.token_hex(8).upper()


@pytest.fixture(scope="session")
def signed_tasq():
    """tasq with auth on: one access key acting for a key with every role, one for a
    producer-only key; `credentials[role] = (access key id, secret, tasq API key)`."""
    creds = {}
    keys = ""
    sqs_creds = ""
    for name, roles in [("full", '["producer", "worker", "admin"]'), ("producer", '["producer"]')]:
        api_key = "tq_" + secrets.token_urlsafe(24)
        akid, secret = access_key(), secrets.token_urlsafe(30)
        creds[name] = (akid, secret, api_key)
        keys += (f'\n[[auth.keys]]\nname = "{name}"\n'
                 f'sha256 = "{hashlib.sha256(api_key.encode()).hexdigest()}"\n'
                 f'namespaces = ["*"]\nroles = {roles}\n')
        sqs_creds += (f'\n[[sqs.credentials]]\naccess_key_id = "{akid}"\n'
                      f'secret_access_key = "{secret}"\nkey = "{name}"\n')
    process, tasq = start(
        "[auth]\nenabled = true\n" + keys + '\n[sqs]\nenabled = true\nbind = "127.0.0.1:0"\n'
        + sqs_creds, creds)
    yield tasq
    process.stop()


def client(endpoint, protocol="json", key_id="anything", secret="anything"):
    """A boto3 SQS client on `endpoint` speaking `protocol` (json or query)."""
    session = botocore.session.get_session()
    if protocol == "query":
        model = Path(QUERY_MODEL) / "sqs" / "2012-11-05" / "service-2.json"
        assert model.exists(), f"no query model at {model}: run .ci/sqs-check"
        session.set_config_variable("data_path", QUERY_MODEL)
    c = boto3.Session(botocore_session=session).client(
        "sqs", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}))
    assert c.meta.service_model.protocol == protocol
    return c


@pytest.fixture(params=["json", "query"])
def sqs(request, open_tasq):
    """A boto3 client for the open endpoint, in each protocol."""
    return client(open_tasq.sqs, request.param)


def unique(prefix):
    return f"{prefix}-{secrets.token_hex(4)}"
