"""The real ASGI app of a service in this process, over httpx's ASGI transport: no socket, no uvicorn.

The same app object ``python -m apinode serve`` runs, started the way its lifespan starts it. Fast
enough to run on every mutant of ``make mutate``; the HTTP server itself is covered by the tests
that start real processes (conftest.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from apinode.app import create_app
from apinode.settings import load_settings
from tests.apinode_proc import API_KEY


class InProcessService:
    """One started service definition (bundled sources only: no background refresh tasks)."""

    def __init__(self, service_dir: Path, env: dict[str, str] | None = None) -> None:
        settings = load_settings(service_dir, {"APINODE_API_KEYS": API_KEY, **(env or {})})
        self.app = create_app(settings)
        self.service = settings.definition.id
        asyncio.run(self._start())

    async def _start(self) -> None:
        await self.app.runtime.start()
        self.app.started()

    def post(self, endpoint_action: str, body: object, auth: tuple[str, str] | None = (API_KEY, "")) -> httpx.Response:
        """POST /public/api/v1/<service>/<endpoint_action> with a JSON body."""

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://apinode.invalid", auth=auth) as client:
                return await client.post(f"/public/api/v1/{self.service}/{endpoint_action}", json=body)

        return asyncio.run(call())
