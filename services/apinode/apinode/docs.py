"""Browsable pages of a service: interactive API docs (Swagger UI, served from the pinned
``swagger-ui-bundle`` package, no CDN) and a data-product page rendered from the definition the
server runs on, with the live state of its sources."""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import swagger_ui_bundle

from .definition import ServiceDefinition
from .runtime import Runtime

# What the docs page needs from the Swagger UI distribution; nothing else is served from it.
_ASSETS = {
    "swagger-ui.css": b"text/css; charset=utf-8",
    "swagger-ui-bundle.js": b"text/javascript; charset=utf-8",
    "favicon-32x32.png": b"image/png",
}
_HERE = Path(__file__).parent / "static"
_OWN_ASSETS = {"docs.js": b"text/javascript; charset=utf-8", "docs.css": b"text/css; charset=utf-8"}
# Scripts and styles from this server only: the page works offline and cannot leak a key elsewhere.
# Swagger UI sets inline styles and shows data: images, hence those two allowances.
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    b"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HTML = b"text/html; charset=utf-8"
SOURCE_NAMES = {
    "bundled": "bundled with the image, held in memory",
    "sql-cached": "SQL, cached in memory and refreshed",
    "sql-live": "SQL, queried live per request",
}

Sender = Callable[[object, int, bytes, bytes, list], Awaitable[None]]


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='docs/assets/favicon-32x32.png'>"
        "<link rel='stylesheet' href='docs/assets/docs.css'>"
        f"</head><body>{body}</body></html>"
    ).encode()


def _when(epoch: float | None) -> str:
    if not epoch:
        return "not loaded yet"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class DocsPages:
    """The GET routes under ``/public/api/v1/<service>/``: docs, its assets, and the product page."""

    def __init__(self, definition: ServiceDefinition, runtime: Runtime, env: Mapping[str, str]) -> None:
        self._definition = definition
        self._runtime = runtime
        self._consumers = tuple(c.strip() for c in env.get("APINODE_CONSUMERS", "").split(",") if c.strip())
        vendor = Path(swagger_ui_bundle.swagger_ui_path)
        self._assets = {name: (vendor / name).read_bytes() for name in _ASSETS}
        self._assets.update({name: (_HERE / name).read_bytes() for name in _OWN_ASSETS})
        self._types = {**_ASSETS, **_OWN_ASSETS}
        self._docs = self._docs_page()

    def routes(self, base: str, send: Sender) -> dict[str, Callable]:
        """Exact paths to handlers taking the ASGI ``send``."""

        async def docs(out) -> None:
            await send(out, 200, self._docs, _HTML, [(b"content-security-policy", _CSP)])

        async def product(out) -> None:
            await send(out, 200, self.product_page(), _HTML, [(b"content-security-policy", _CSP)])

        def asset(name: str):
            async def serve(out) -> None:
                await send(
                    out, 200, self._assets[name], self._types[name],
                    [(b"cache-control", b"public, max-age=3600")],
                )

            return serve

        table = {f"{base}docs": docs, f"{base}product": product}
        table.update({f"{base}docs/assets/{name}": asset(name) for name in self._assets})
        return table

    def _docs_page(self) -> bytes:
        definition = self._definition
        return _page(
            f"{definition.id}: API docs",
            "<header class='bar'>"
            f"<strong>{html.escape(definition.id)}</strong> v{html.escape(definition.version)}"
            " &middot; <a href='product'>data product</a>"
            " &middot; <a href='swagger'>OpenAPI document</a>"
            " &middot; <a href='/metrics'>metrics</a>"
            "<span class='hint'>Authorize with your API key as the username and a blank password.</span>"
            "</header>"
            "<div id='swagger-ui'></div>"
            "<script src='docs/assets/swagger-ui-bundle.js'></script>"
            "<script src='docs/assets/docs.js'></script>"
            "<link rel='stylesheet' href='docs/assets/swagger-ui.css'>",
        )

    def product_page(self) -> bytes:
        """Rendered per request: the sources' age and freshness change while the server runs."""
        definition = self._definition
        parts = [
            "<header class='bar'>"
            f"<strong>{html.escape(definition.id)}</strong> v{html.escape(definition.version)}"
            " &middot; <a href='docs'>API docs</a> &middot; <a href='swagger'>OpenAPI document</a>"
            " &middot; <a href='/metrics'>metrics</a></header><main>",
            f"<h1>Data product {html.escape(definition.id)}</h1>",
            self._endpoints_section(),
            self._tables_section(),
            self._models_section(),
            self._callers_section(),
            "</main>",
        ]
        return _page(f"{definition.id}: data product", "".join(parts))

    def _endpoints_section(self) -> str:
        definition = self._definition
        rows = []
        for name, endpoint in definition.lookups.items():
            table = definition.tables[endpoint.table]
            rows.append(
                f"<tr><td><code>{html.escape(name)}</code></td><td>lookup, lookup-multi</td>"
                f"<td>rows of <code>{html.escape(table.name)}</code> by <code>{html.escape(table.key)}</code>"
                f"; not found: {html.escape(endpoint.on_not_found)}, several: {html.escape(endpoint.on_several)}"
                "</td></tr>"
            )
        for name, endpoint in definition.predictions.items():
            keys = sorted({field for lookup in endpoint.lookups for field, _ in lookup.key})
            enriched = (
                f"; send only {', '.join(f'<code>{html.escape(k)}</code>' for k in keys)} and the rest is "
                f"looked up ({html.escape(endpoint.enrichment_via)})"
                if keys else ""
            )
            rows.append(
                f"<tr><td><code>{html.escape(name)}</code></td><td>predict, predict-multi</td>"
                f"<td>scores a record{enriched}</td></tr>"
            )
        return (
            "<section id='endpoints'><h2>Endpoints</h2><table><thead><tr><th>endpoint</th><th>actions</th>"
            f"<th>what it answers</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
        )

    def _tables_section(self) -> str:
        definition = self._definition
        runtime = self._runtime
        remote_tables = {
            lookup.table: lookup
            for endpoint in definition.predictions.values()
            if endpoint.enrichment_via == "remote"
            for lookup in endpoint.lookups
        }
        blocks = []
        for name, table in definition.tables.items():
            source = runtime.sources.get(name)
            if source is not None:
                stale = getattr(source, "stale", False)
                freshness = (
                    f"<dt>source</dt><dd class='source'>{html.escape(SOURCE_NAMES.get(source.kind, source.kind))}</dd>"
                    + (
                        f"<dt>rows</dt><dd>{source.table.size:,}</dd>"
                        if getattr(source, "table", None) is not None else ""
                    )
                    + f"<dt>last load</dt><dd>{_when(getattr(source, 'loaded_at', None))}</dd>"
                    f"<dt>data age</dt><dd>{_age(source.age_seconds())}</dd>"
                    + (
                        f"<dt>refresh</dt><dd>every {table.sql.refresh_seconds:g} s</dd>"
                        if source.kind == "sql-cached" and table.sql else ""
                    )
                    + f"<dt>state</dt><dd>{'stale: the last refresh failed' if stale else 'fresh'}</dd>"
                )
            elif name in remote_tables:
                lookup = remote_tables[name]
                freshness = (
                    "<dt>source</dt><dd class='source'>looked up from "
                    f"<code>{html.escape(lookup.remote or '')}</code> endpoint "
                    f"<code>{html.escape(lookup.remote_endpoint or '')}</code> (its own product page tells its age)</dd>"
                )
            else:
                freshness = "<dt>source</dt><dd class='source'>declared, not used by this service</dd>"
            columns = "".join(
                f"<tr><td><code>{html.escape(c.name)}</code></td><td>{html.escape(c.type)}</td>"
                f"<td>{'key' if c.name == table.key else ''}</td></tr>"
                for c in table.columns
            )
            blocks.append(
                f"<article class='table' id='table-{html.escape(name)}'><h3>{html.escape(name)}</h3>"
                f"<dl>{freshness}</dl><table><thead><tr><th>column</th><th>type</th><th></th></tr></thead>"
                f"<tbody>{columns}</tbody></table></article>"
            )
        return f"<section id='tables'><h2>Tables</h2>{''.join(blocks)}</section>"

    def _models_section(self) -> str:
        predictions = self._definition.predictions
        if not predictions:
            return ""
        blocks = []
        for name, endpoint in predictions.items():
            generations = endpoint.generations
            if generations:
                weights = dict(endpoint.dispatch)  # generations.py: the weights as this process dispatches
                rows = "".join(
                    f"<tr><td><code>{html.escape(str(g.id))}</code></td><td><code>{html.escape(g.model_path.name)}</code></td>"
                    f"<td>{weights.get(g.id, 0.0):g}</td></tr>"
                    for g in generations
                )
                detail = (
                    "<table><thead><tr><th>generation</th><th>model</th><th>dispatch weight</th></tr></thead>"
                    f"<tbody>{rows}</tbody></table>"
                )
            else:
                detail = (
                    f"<p>one model: <code>{html.escape(endpoint.model_path.name)}</code>, "
                    f"outputs <code>{html.escape(endpoint.outputs[0])}</code> and "
                    f"<code>{html.escape(endpoint.outputs[1])}</code></p>"
                )
            features = ", ".join(f"<code>{html.escape(spec.name)}</code>" for spec in endpoint.features)
            blocks.append(
                f"<article id='model-{html.escape(name)}'><h3>{html.escape(name)}</h3>{detail}"
                f"<p>derived features: {features or 'none'}</p></article>"
            )
        return f"<section id='models'><h2>Models</h2>{''.join(blocks)}</section>"

    def _callers_section(self) -> str:
        if self._consumers:
            items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in self._consumers)
            who = f"<p>Admitted by this deployment (mesh identities, or client ranges):</p><ul>{items}</ul>"
        else:
            who = "<p>No consumers listed for this deployment: any caller holding an API key.</p>"
        return f"<section id='callers'><h2>Who may call it</h2>{who}<p>Every call needs an API key.</p></section>"
