"""Everything a service needs at run time: sources, remotes, models, enrichers; readiness."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Mapping

from .definition import ServiceDefinition
from .enrich import Enricher
from .generations import load_generations
from .model import Model
from .sources import make_source

log = logging.getLogger("apinode")


class Runtime:
    """Loaded state of one service; built in the lifespan start-up, never at import."""

    def __init__(self, definition: ServiceDefinition, env: Mapping[str, str]) -> None:
        self.definition = definition
        self._env = env
        self.sources: dict = {}
        self.remotes: dict = {}
        self.models: dict[str, Model] = {}
        self.enrichers: dict[str, Enricher] = {}
        self.generations: dict[str, dict[str, Model]] = {}  # endpoint -> generation id -> model
        self.loaded = False
        self.draining = False

    def _needed_tables(self) -> set[str]:
        needed = {table for endpoint in self.definition.lookups.values() for table in endpoint.tables}
        for endpoint in self.definition.predictions.values():
            if endpoint.enrichment_via == "bundled":
                needed |= {lookup.table for lookup in endpoint.lookups}
        return needed

    async def start(self) -> None:
        definition = self.definition
        timeout = definition.limits.request_timeout_seconds
        for name in sorted(self._needed_tables()):
            self.sources[name] = make_source(definition.tables[name], self._env, timeout)
        for endpoint in definition.predictions.values():
            if endpoint.enrichment_via == "remote":
                for lookup in endpoint.lookups:
                    if lookup.remote not in self.remotes:
                        from .remote import RemoteService, expected_tables  # only for services that call others

                        self.remotes[lookup.remote] = RemoteService(
                            definition.remotes[lookup.remote], expected_tables(definition, lookup.remote)
                        )
        models = await asyncio.gather(
            *(asyncio.to_thread(Model, endpoint) for endpoint in definition.predictions.values()),
            *(source.start() for source in self.sources.values()),
        )
        for endpoint, model in zip(definition.predictions.values(), models):
            self.models[endpoint.name] = model
            self.enrichers[endpoint.name] = Enricher(endpoint, model.input_names, self.sources, self.remotes)
        self.generations = await load_generations(definition, self.models)
        # What start-up built lives as long as the process: out of the collector's sight, a full
        # collection no longer walks it, which trims the latency tail.
        gc.collect()
        gc.freeze()
        self.loaded = True
        log.info(
            "service %s loaded: tables %s, models %s",
            definition.id,
            {
                name: (source.kind, source.table.size if source.table else None)
                for name, source in self.sources.items()
            },
            sorted(self.models),
        )

    async def stop(self) -> None:
        await asyncio.gather(
            *(source.stop() for source in self.sources.values()),
            *(remote.close() for remote in self.remotes.values()),
        )

    def is_ready(self) -> bool:
        return self.loaded and not self.draining and all(source.ready for source in self.sources.values())

    def refreshing(self, tables) -> tuple:
        """The sources among ``tables`` that refresh, so can serve stale data."""
        return tuple(
            self.sources[name]
            for name in tables
            if name in self.sources and self.sources[name].kind == "sql-cached"
        )
