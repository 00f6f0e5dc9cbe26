"""Throwaway servers owned by one test: a private PostgreSQL (crashed with `pg_ctl stop -m
immediate`), a private Redis with AOF (`kill -9`, restarted on the same directory), and a TCP
proxy that can cut or stall every connection through it. Nothing here touches the machine's
shared servers (5432, 6379, 5672)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from store.sql.engine import make_engine
from store.sql.migrate import upgrade
from tests.conftest import IN_CI

PG_BIN = Path(os.environ.get("SLATIMER_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT = 30.0


class ServerUnavailable(RuntimeError):
    """A private server could not be started (the binary is missing or it did not answer)."""


def started(server: Any, start: str) -> Any:
    """`server.<start>()`, or skip the test when it cannot start; in CI (CI=true) fail."""
    try:
        getattr(server, start)()
    except ServerUnavailable as error:
        server.destroy()
        if IN_CI:
            raise
        pytest.skip(f"cannot start a private server: {error}")
    return server


def installed(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise ServerUnavailable(f"{name} is not installed")
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres() -> list[str]:
    """initdb and postgres refuse to run as root: drop to the `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(command: list[str], what: str, timeout: float = START_TIMEOUT) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServerUnavailable(f"{what}: {error}") from error
    if done.returncode != 0:
        raise ServerUnavailable(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")


@dataclass
class PrivatePostgres:
    """initdb into a temp dir, `pg_ctl start` on a free port; crash and restart at will."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="slt-pg-")))
    port: int = field(default_factory=free_port)
    crashes: int = 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise ServerUnavailable(f"no PostgreSQL binaries in {PG_BIN}")
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        _run(
            [*_as_postgres(), str(PG_BIN / "initdb"), "-D", str(self.directory / "data"),
             "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            "initdb",
        )  # fmt: skip
        self.start()
        engine = make_engine(self.url)
        upgrade(engine)
        engine.dispose()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=32MB -c fsync=on"
        )
        _run(
            [*_as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"),
             "-o", options, "-l", str(self.directory / "server.log"), "-w", "-t", "30", "start"],
            "pg_ctl start",
        )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        engine = make_engine(self.url)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    with engine.connect() as connection:
                        connection.execute(text("select 1"))
                    return
                except Exception as error:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline:
                        raise ServerUnavailable(f"PostgreSQL on {self.port}: {error}") from error
                    time.sleep(0.1)
        finally:
            engine.dispose()

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: no checkpoint, crash recovery on the next start."""
        _run(
            [*_as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"),
             "-m", "immediate", "-w", "stop"],
            "pg_ctl stop",
        )  # fmt: skip
        self.crashes += 1

    def destroy(self) -> None:
        subprocess.run(
            [*_as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"),
             "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PrivateRedis:
    """redis-server with `--appendonly yes --appendfsync everysec` on a free port; `kill -9`
    and a restart on the same directory (the AOF is replayed)."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="slt-redis-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    crashes: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = installed("redis-server")
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--maxmemory-policy", "noeviction", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.RedisError as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise ServerUnavailable(f"redis-server on {self.port}: {error}") from error
            time.sleep(0.05)

    def crash(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.crashes += 1

    def destroy(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PrivateRabbit:
    """A RabbitMQ node of the test's own: its own node name, ports and data directory, run as
    the `rabbitmq` user (the packaged `rabbitmq-server` switches to it when started as root).
    `.crash()` = `kill -9` of its Erlang VM; `.start()` on the same data directory recovers
    durable queues and persistent messages (a publisher confirm means the message is on disk)."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="slt-rabbit-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    crashes: int = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        binary = installed("rabbitmq-server")
        (self.directory / "enabled_plugins").write_text("[].\n")
        # its own config file: the machine's (/etc/rabbitmq) would bind the shared node's port
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
        )
        if os.geteuid() == 0:
            shutil.chown(self.directory, "rabbitmq", "rabbitmq")
            for path in self.directory.iterdir():
                shutil.chown(path, "rabbitmq", "rabbitmq")
        log = (self.directory / "server.out").open("ab")
        self.process = subprocess.Popen(
            [binary], env={**os.environ, **self._env()}, stdout=log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _env(self) -> dict[str, str]:
        return {
            "RABBITMQ_NODENAME": f"slt{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(self.directory / "node.pid"),
        }

    def _wait_ready(self) -> None:
        import kombu

        deadline = time.monotonic() + START_TIMEOUT * 2
        while True:
            try:
                with kombu.Connection(self.url, connect_timeout=1) as connection:
                    connection.connect()
                return
            except Exception as error:  # noqa: BLE001 - not up yet
                exited = self.process is not None and self.process.poll() is not None
                if exited or time.monotonic() > deadline:
                    raise ServerUnavailable(f"RabbitMQ on {self.port}: {error}") from error
                time.sleep(0.2)

    def crash(self) -> None:
        """`kill -9` of the node's Erlang VM (beam.smp), as a machine losing power would."""
        pid = int((self.directory / "node.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)
        self.crashes += 1

    def destroy(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.crash()
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


class Proxy:
    """A TCP proxy on a free port to `target`: `cut()` resets every connection through it (and
    refuses new ones while `down`), `stall()` stops forwarding bytes without closing anything."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.down = threading.Event()
        self.stalled = threading.Event()
        self.cuts = 0
        self.stalls = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.down.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                while self.stalled.is_set() and not self._closed.is_set():
                    time.sleep(0.05)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            _reset(source)
            _reset(sink)

    def cut(self, seconds: float) -> None:
        """Reset every open connection and refuse new ones for `seconds` (a network cut)."""
        self.down.set()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        self.cuts += 1
        time.sleep(seconds)
        self.down.clear()

    def stall(self, seconds: float) -> None:
        """Hold every byte in flight for `seconds`, connections left open (a black hole)."""
        self.stalled.set()
        self.stalls += 1
        time.sleep(seconds)
        self.stalled.clear()

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        with self._lock:
            for client, upstream in self._pairs:
                _reset(client)
                _reset(upstream)


def _reset(sock: socket.socket) -> None:
    """Drop the connection. `close()` alone is not enough: while a pipe thread is blocked in
    `recv` on the socket the kernel keeps it open, and the peer is left on a silent,
    half-open connection (kombu notices only after its 50 s BRPOP stale check). `shutdown`
    wakes that thread and ends the connection at once; linger 0 makes the close a reset."""
    for step in (
        lambda: sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
        lambda: sock.shutdown(socket.SHUT_RDWR),
        sock.close,
    ):
        try:
            step()
        except OSError:
            pass
