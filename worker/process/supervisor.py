"""`slatimer run`: ingest, worker and dispatcher together, each a child process, restarted if
it dies. For production run `slatimer ingest`, `slatimer worker` and `slatimer dispatcher` as
separate services (see docker-compose.yml) and scale each on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

import structlog

from worker.process.backoff import compute_backoff

log = structlog.get_logger("slatimer.runner")
ROLES = ("ingest", "worker", "dispatcher")


@dataclass
class Child:
    role: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: Mapping[str, str], output: IO[bytes] | None = None) -> None:
        self.process = subprocess.Popen(
            self.command, env=dict(env), stdout=output, stderr=output and subprocess.STDOUT
        )
        self.started_at = time.monotonic()
        log.info("started", role=self.role, pid=self.process.pid)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


def child_command(role: str) -> list[str]:
    return [sys.executable, "-m", "worker", role]


class Supervisor:
    """Keeps one child per role alive until told to stop; stops them gently, then firmly."""

    def __init__(
        self,
        roles: Sequence[str] = ROLES,
        env: Mapping[str, str] | None = None,
        output: IO[bytes] | None = None,
    ) -> None:
        self.children = [Child(role, child_command(role)) for role in roles]
        self.env = dict(env if env is not None else os.environ)
        self.output = output
        """Where the children's stdout and stderr go (default: inherited)."""
        self.stop = threading.Event()

    def run(self) -> None:
        for child in self.children:
            child.start(self.env, self.output)
        while not self.stop.wait(0.5):
            for child in self.children:
                self._restart_if_dead(child)
        self.shutdown()

    def _restart_if_dead(self, child: Child) -> None:
        code = child.exited()
        if code is None:
            return
        if time.monotonic() - child.started_at > 60:
            child.restarts = 0  # it ran a good while: a fresh failure, not a crash loop
        child.restarts += 1
        delay = compute_backoff(child.restarts, base=1.0, cap=30.0)
        log.warning("child exited; restarting", role=child.role, code=code, delay_s=delay)
        if not self.stop.wait(delay):
            child.start(self.env, self.output)

    def shutdown(self, grace: float = 20.0) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("all stopped")

    def stop_on_signals(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            self.stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
