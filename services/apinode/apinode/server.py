"""Runs the app under uvicorn (uvloop + httptools) with a graceful drain on SIGTERM."""

from __future__ import annotations

import logging
import time

import uvicorn

from .app import ApiNodeApp, create_app
from .protocol import guarded_protocol
from .settings import Settings

log = logging.getLogger("apinode")


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: /readyz turns 503 at once, serving goes on for the drain delay, then
    uvicorn stops accepting, lets in-flight requests finish within the grace period, and exits 0."""

    def __init__(self, config: uvicorn.Config, app: ApiNodeApp, drain_delay: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_delay = drain_delay
        self._exit_at: float | None = None

    def handle_exit(self, sig, frame) -> None:
        # Not recorded for re-raising (uvicorn's default), so a drained stop exits with code 0.
        self._app.runtime.draining = True
        if self._exit_at is not None:
            self.should_exit = True
            if self._exit_at <= time.monotonic():
                self.force_exit = True
            return
        self._exit_at = time.monotonic() + self._drain_delay
        if self._drain_delay == 0:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: Settings, host: str, port: int, log_level: str = "info") -> int:
    """Serve until stopped; the exit code is 0 after a drain, 3 when start-up failed."""
    app = create_app(settings)
    limits = settings.definition.limits
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(limits, app.inline),
        ws="none",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=settings.grace_seconds,
        timeout_keep_alive=limits.keep_alive_seconds,  # kept by the protocol's sweep
        backlog=2048,
    )
    server = DrainingServer(config, app, settings.drain_delay_seconds)
    server.run()
    return 0 if server.started else 3
