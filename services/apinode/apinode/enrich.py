"""Auto-lookup enrichment: fill a prediction's missing features by key, then declared preprocessing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .definition import EnrichmentLookup, PredictionEndpoint
from .errors import ApiError, MissingFeatures, MissingLookupKey, RecordNotFound, SeveralMatches
from .transforms import SCALAR_TRANSFORMS


class _Lookup:
    """One compiled enrichment lookup bound to its provider (a memory table or a remote endpoint)."""

    def __init__(
        self, spec: EnrichmentLookup, inputs: frozenset[str], steps: dict[str, str], source, remote
    ) -> None:
        self.spec = spec
        used = inputs | set(steps.values())
        self.columns = tuple((c, f) for c, f in spec.columns if f in used)
        self.features = tuple(f for _, f in self.columns)
        # What makes the lookup worth doing: a model input it fills, or one derived from what it fills.
        self._direct = tuple(f for f in self.features if f in inputs)
        self.column = spec.key[0][1]
        self._derived = tuple((output, source) for output, source in steps.items() if source in self.features)
        self.source, self.remote = source, remote
        # Lookups of one remote endpoint with the same key share a call (Enricher._fetch).
        self.shared = (id(remote), spec.remote_endpoint, spec.key)
        self._bound_table = None
        self._bound: tuple = ()

    def _wanted(self, features: dict) -> bool:
        get = features.get  # loops, not any() over generators: this runs per lookup per record
        for feature in self._direct:
            if get(feature) is None:
                return True
        for output, source in self._derived:
            if get(output) is None and get(source) is None:
                return True
        return False

    def key_of(self, features: dict) -> dict | None:
        """The lookup key for this row, or None when nothing it would fill is missing."""
        if not self._wanted(features):
            return None
        key = {}
        for feature, column in self.spec.key:
            value = features.get(feature)
            if value is None:
                if self.spec.on_missing_key != "ignore":
                    raise _policy(
                        MissingLookupKey(
                            f"missing lookup key {feature!r}",
                            f"{feature!r} is needed to look up {', '.join(self.features)} "
                            f"in {self.spec.table}; send it or those features",
                        ),
                        self.spec.on_missing_key,
                    )
                return None
            key[column] = value
        return key

    async def rows_many(self, keys: list[dict]) -> list[list[dict]]:
        if self.remote is not None:
            # By table: a multi-table endpoint (profile) may have the key in one table only.
            table = self.spec.table
            found = await self.remote.rows_many(self.spec.remote_endpoint, keys, [table])
            return [rows[table] for rows in found]
        if self.source.in_memory:
            (column,) = keys[0]
            return [self.source.rows(key[column]) for key in keys]
        (column,) = keys[0]
        return await self.source.rows_many([key[column] for key in keys])

    def fill_now(self, features: dict, key: dict) -> None:
        """``merge`` from an in-memory table, reading only the columns it fills."""
        table = self.source.table
        positions = table.rows(key[self.column]) if table is not None else ()
        if len(positions) != 1:
            self.merge(features, key, self.source.rows(key[self.column]))
            return
        if table is not self._bound_table:  # a refresh swapped the table: bind its columns once
            self._bound_table, self._bound = table, table.getters([c for c, _ in self.columns])
        position = positions[0]
        for (_, feature), get in zip(self.columns, self._bound):
            if features.get(feature) is None:
                features[feature] = get(position)

    def merge(self, features: dict, key: dict, rows: list[dict]) -> None:
        if not rows:
            if self.spec.on_not_found != "ignore":
                raise _policy(
                    RecordNotFound(
                        f"no {self.spec.table} record for {_show(key)}",
                        f"no {self.spec.table} record for {_show(key)}; "
                        f"features {', '.join(self.features)} cannot be filled",
                    ),
                    self.spec.on_not_found,
                )
            return
        if len(rows) > 1 and self.spec.on_several != "first":
            raise _policy(
                SeveralMatches(
                    f"several {self.spec.table} records for {_show(key)}",
                    f"{len(rows)} {self.spec.table} records match {_show(key)}",
                ),
                self.spec.on_several,
            )
        row = rows[0]
        for column, feature in self.columns:
            if features.get(feature) is None:
                features[feature] = row.get(column)


def _policy(error: ApiError, policy: str) -> ApiError:
    """``fail`` (Dataiku's FAIL) answers the record ignored; ``error`` fails a /predict call."""
    error.record_level = policy == "fail"
    return error


def _show(key: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items())


class Enricher:
    """Completes rows for a model: caller values win, lookups fill gaps, preprocessing derives the rest."""

    def __init__(
        self, endpoint: PredictionEndpoint, model_inputs: frozenset[str], sources: dict, remotes: dict
    ) -> None:
        steps = {step.output: step.input for step in endpoint.preprocessing if step.output in model_inputs}
        via_remote = endpoint.enrichment_via == "remote"
        self._lookups = tuple(
            _Lookup(
                spec,
                model_inputs,
                steps,
                None if via_remote else sources[spec.table],
                remotes[spec.remote] if via_remote else None,
            )
            for spec in endpoint.lookups
        )
        self._steps: tuple[tuple[str, str, Callable, object], ...] = tuple(
            (step.output, step.input, SCALAR_TRANSFORMS[step.transform], step.as_of)
            for step in endpoint.preprocessing
            if step.output in model_inputs
        )
        self._inputs = tuple(sorted(model_inputs))
        self._allow_missing = endpoint.allow_missing_features
        # A lookup over the network or on a live database: completing a row waits for it.
        self._all_remote = via_remote and bool(self._lookups)
        self.waits = via_remote or any(
            lookup.source is not None and not lookup.source.in_memory for lookup in self._lookups
        )

    async def complete_one(self, row: dict) -> None:
        """Fill one row in place, or raise the reason it cannot be scored (the single-record path)."""
        if not self.waits:
            problem = self.complete_one_now(row)
        elif self._all_remote:
            problem = await self._complete_one_remote(row)
        else:
            problem = (await self.complete([row]))[0]
        if problem is not None:
            raise problem

    async def _complete_one_remote(self, row: dict) -> ApiError | None:
        """``complete([row])[0]`` when every lookup is remote, without the batch's bookkeeping: the
        lookups that share an endpoint and key (``profile``) still share one call."""
        try:
            calls: dict[tuple, list] = {}
            for lookup in self._lookups:
                key = lookup.key_of(row)
                if key is not None:
                    calls.setdefault(lookup.shared, []).append((lookup, key))
        except ApiError as error:
            return error
        groups = list(calls.values())
        if len(groups) == 1:  # the usual case (profile): awaited here, no task
            answers = [await self._one_call(groups[0])]
        else:
            answers = await asyncio.gather(*(self._one_call(members) for members in groups))
        try:
            for members, by_table in zip(groups, answers):
                for lookup, key in members:
                    lookup.merge(row, key, by_table[lookup.spec.table])
        except ApiError as error:
            return error
        return self._finish(row)

    @staticmethod
    async def _one_call(members: list) -> dict[str, list[dict]]:
        lookup, key = members[0]
        tables = [member.spec.table for member, _ in members]
        (by_table,) = await lookup.remote.rows_many(lookup.spec.remote_endpoint, [key], tables)
        return by_table

    def complete_one_now(self, row: dict) -> ApiError | None:
        """``complete_one`` when no lookup waits (``waits`` false): the reason it cannot be scored, or None."""
        try:
            for lookup in self._lookups:
                key = lookup.key_of(row)
                if key is not None:
                    lookup.fill_now(row, key)
        except ApiError as error:
            return error
        return self._finish(row)

    async def complete(self, rows: list[dict]) -> list[ApiError | None]:
        """Fill ``rows`` in place; per row, None when it can be scored, else the reason it cannot.

        Errors of the sources themselves (a database or service down) are raised: they concern
        the whole request, not one row.
        """
        outcome: list[ApiError | None] = [None] * len(rows)
        plans = []
        for lookup in self._lookups:
            wanted = []
            for i, row in enumerate(rows):
                if outcome[i] is not None:
                    continue
                try:
                    key = lookup.key_of(row)
                except ApiError as error:
                    outcome[i] = error
                    continue
                if key is not None:
                    wanted.append((i, key))
            plans.append((lookup, wanted))
        found = await self._fetch(plans)
        for (lookup, wanted), matches in zip(plans, found):
            for (i, key), rows_found in zip(wanted, matches):
                if outcome[i] is None:
                    try:
                        lookup.merge(rows[i], key, rows_found)
                    except ApiError as error:
                        outcome[i] = error
        for i, row in enumerate(rows):
            if outcome[i] is None:
                outcome[i] = self._finish(row)
        return outcome

    async def _fetch(self, plans: list) -> list[list[list[dict]]]:
        """Per lookup, per wanted row, the matching rows.

        Lookups served by the same remote endpoint with the same key (both tables from
        customer-features' ``profile``) share one call: one upstream request per prediction, or
        per predict-multi batch, instead of one per table.
        """
        found: list = [[] for _ in plans]
        groups: dict = {}
        for n, (lookup, wanted) in enumerate(plans):
            if wanted:
                groups.setdefault(lookup.shared if lookup.remote is not None else n, []).append(n)
        calls = [self._fetch_group(plans, members) for members in groups.values()]
        if self.waits and len(calls) > 1:
            answers = await asyncio.gather(*calls)
        else:  # one call (the profile lookup) needs no task of its own: awaited here
            answers = [await call for call in calls]
        for members, answer in zip(groups.values(), answers):
            for n, rows in zip(members, answer):
                found[n] = rows
        return found

    async def _fetch_group(self, plans: list, members: list[int]) -> list[list[list[dict]]]:
        if len(members) == 1:
            lookup, wanted = plans[members[0]]
            return [await lookup.rows_many([k for _, k in wanted])]
        union: dict[int, dict] = {}
        for n in members:
            for i, key in plans[n][1]:
                union.setdefault(i, key)
        order = sorted(union)
        lookup = plans[members[0]][0]
        tables = [plans[n][0].spec.table for n in members]
        by_table = await lookup.remote.rows_many(
            lookup.spec.remote_endpoint, [union[i] for i in order], tables
        )
        position = {i: p for p, i in enumerate(order)}
        return [
            [by_table[position[i]][plans[n][0].spec.table] for i, _ in plans[n][1]] for n in members
        ]

    def _finish(self, row: dict) -> ApiError | None:
        for output, source, transform, as_of in self._steps:
            if row.get(output) is None and row.get(source) is not None:
                row[output] = transform(row[source], as_of)
        if self._allow_missing:
            return None
        for name in self._inputs:  # a loop, no list, for the usual complete row
            if row.get(name) is None:
                break
        else:
            return None
        missing = [name for name in self._inputs if row.get(name) is None]
        if missing:
            return MissingFeatures(
                f"missing features: {', '.join(missing)}",
                f"the model needs {', '.join(missing)}: send them, or a key to look them up",
            )
        return None
