"""Starting and stopping the real tasq binary for the Python test suites (tests/ui,
tests/sqs_clients): TASQ_BIN (default target/debug/tasq) on 127.0.0.1:0 with a config file and
a data directory in a temporary folder, waiting for the lines it prints when it listens."""

import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("TASQ_BIN", str(ROOT / "target" / "debug" / "tasq"))


class Process:
    """A running `tasq serve`: `urls[prefix]` is the URL of each awaited listening line."""

    def __init__(self, config_text, listening=("tasq listening on ",)):
        self.work = tempfile.TemporaryDirectory(prefix="tasq-py-")
        folder = Path(self.work.name)
        (folder / "tasq.toml").write_text(config_text)
        self.log = open(folder / "stderr.log", "w+")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", str(folder / "tasq.toml"), "--bind", "127.0.0.1:0",
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
            self.stop()
            raise RuntimeError(f"tasq did not start:\n{(folder / 'stderr.log').read_text()}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.work.cleanup()
