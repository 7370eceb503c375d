"""Starting and stopping the real tasq binary for the Python test suites (tests/ui,
tests/sqs_clients): TASQ_BIN (default target/debug/tasq) on 127.0.0.1:0 with a config file and
a data directory in a temporary folder, waiting for the lines it prints when it listens."""

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("TASQ_BIN", str(ROOT / "target" / "debug" / "tasq"))


class Process:
    """A running `tasq serve`: `urls[prefix]` is the URL of each awaited listening line."""

    def __init__(self, config_text, listening=("tasq listening on ",), bind="127.0.0.1:0"):
        self.work = tempfile.TemporaryDirectory(prefix="tasq-py-")
        self.listening = listening
        self.bind = bind
        (Path(self.work.name) / "tasq.toml").write_text(config_text)
        self.log = open(Path(self.work.name) / "stderr.log", "a+")
        self._spawn()

    def _spawn(self):
        folder = Path(self.work.name)
        listening = self.listening
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", str(folder / "tasq.toml"), "--bind", self.bind,
             "--data-dir", str(folder / "data")],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.urls = {}
        deadline = time.time() + 30
        while time.time() < deadline and len(self.urls) < len(listening):
            line = self.proc.stdout.readline()
            if not line:
                break
            for prefix in listening:
                if line.startswith(prefix):
                    self.urls[prefix] = line.split()[-1]
        if len(self.urls) < len(listening):
            log = (folder / "stderr.log").read_text()
            self.stop()
            raise RuntimeError(f"tasq did not start:\n{log}")
        # Keep reading stdout so the pipe never fills.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def restart(self):
        """Kills the server (SIGKILL) and starts it again on the same address and data."""
        self.proc.kill()
        self.proc.wait()
        self._spawn()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.work.cleanup()


def free_address():
    """A loopback address with a port nothing listens on (to restart a server on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"
