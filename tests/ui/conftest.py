"""Fixtures for the console's browser tests: a real tasq with auth on, its keys, and Chromium.

The server is the binary named by TASQ_BIN (default target/debug/tasq), started on
127.0.0.1:0 with a temporary data directory and a config holding four keys (admin, viewer,
producer, worker; every namespace). Chromium is Debian's (/usr/bin/chromium, or CHROMIUM),
driven by Playwright: the browser builds Playwright downloads cannot be fetched here.
"""

import hashlib
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasq_process import Process  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("TASQ_SCREENSHOTS", ROOT / "target" / "console-screenshots"))
# The console's operator holds admin and producer (redrive, pause, cancel); the viewer reads.
ROLES = {"admin": ["admin", "producer"], "viewer": ["viewer"], "producer": ["producer"],
         "worker": ["worker"]}


class Tasq:
    """A running tasq: its base URL and one key per role."""

    def __init__(self, base, keys):
        self.base = base
        self.keys = keys

    def call(self, method, path, body=None, role="admin"):
        """The status and parsed body of one API call made with `role`'s key."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.keys[role])
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                return res.status, json.loads(res.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def ok(self, method, path, body=None, role="admin"):
        status, answer = self.call(method, path, body, role)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer}"
        return answer


def q(ns, name, kind="activity"):
    return f"/api/v1/namespaces/{ns}/task-queues/{name}/{kind}"


@pytest.fixture(scope="session")
def tasq():
    keys = {role: "tq_" + secrets.token_urlsafe(32) for role in ROLES}
    entries = "".join(
        f'\n[[auth.keys]]\nname = "{role}-key"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
        f'namespaces = ["*"]\nroles = {json.dumps(ROLES[role])}\n'
        for role, key in keys.items()
    )
    process = Process("[auth]\nenabled = true\n" + entries)
    yield Tasq(process.urls["tasq listening on "], keys)
    process.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"the page threw: {errors}"


def sign_in(page, tasq, role, hash_path=""):
    """Opens the console at `hash_path` and signs in with `role`'s key."""
    # A full load: a same-document hash change would race the form it re-renders.
    page.goto("about:blank")
    page.goto(f"{tasq.base}/ui#/{hash_path}")
    page.get_by_label("API key").fill(tasq.keys[role])
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who").get_by_text(f"{role}-key").wait_for()


def shot(page, name):
    """Writes a screenshot of the whole page to SCREENSHOTS/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
