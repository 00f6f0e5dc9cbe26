"""The read API with the console mounted, built or served in a background thread (the demo and
the browser test serve it so; `slatimer api` runs `build_app` under uvicorn itself)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import Engine

from config.policy import load_policy
from config.settings import Settings
from worker.api.app import create_app
from worker.api.keys import new_key
from worker.console.app import PREFIX, mount_console


def build_app(
    engine: Engine, settings: Settings, now: Callable[[], datetime] | None = None
) -> FastAPI:
    """The read API (worker.api.app.create_app) with /console on it, under the settings'
    policy (its clauses, standing window and thresholds)."""
    app = create_app(engine, settings, now)
    mount_console(app, settings, load_policy(settings.policy_file))
    return app


@dataclass
class Running:
    url: str
    """The console's address (`…/console`)."""
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_in_thread(engine: Engine, settings: Settings, host: str = "127.0.0.1") -> Running:
    """Serve `build_app` on a free port of `host` in a daemon thread; returns once it listens.
    The socket is bound here, so no other process can take the port in between."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, 0))
    config = uvicorn.Config(build_app(engine, settings), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    give_up = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > give_up:
            raise RuntimeError("the console did not start listening")
        time.sleep(0.05)
    port = listener.getsockname()[1]
    return Running(url=f"http://{host}:{port}{PREFIX}", server=server, thread=thread)


def start_console(engine: Engine, settings: Settings, out: Any = print) -> Running:
    """`serve_in_thread` with a fresh operator key (unless the settings have one), printing
    the address and the key to log in with: the demo's console."""
    key = settings.operator_api_key or SecretStr(new_key())
    running = serve_in_thread(engine, settings.model_copy(update={"operator_api_key": key}))
    out(f"  console: {running.url}  (log in with the operator key {key.get_secret_value()})")
    return running
