"""Schemathesis checks beyond the built-in ones (loaded with SCHEMATHESIS_HOOKS=<this file>).

Every answer is JSON; every error answer has the Dataiku error shape a client can rely on.
"""

from __future__ import annotations

import json

import schemathesis


@schemathesis.check
def dataiku_error_body(ctx, response, case):
    """A 4xx/5xx answer is JSON {"errorType", "message", "detailedMessage"}, all non-empty strings."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"HTTP {response.status_code} with a body that is not JSON: {response.content[:200]!r}"
        ) from None
    missing = [
        k
        for k in ("errorType", "message", "detailedMessage")
        if not isinstance(body, dict) or not isinstance(body.get(k), str) or not body.get(k)
    ]
    if missing:
        raise AssertionError(f"HTTP {response.status_code} error body lacks {missing}: {body}")
    return None


@schemathesis.check
def json_content_type(ctx, response, case):
    """Every API answer declares itself as JSON."""
    media = response.headers.get("content-type", [""])
    media = media[0] if isinstance(media, list) else media
    if not media.startswith("application/json"):
        raise AssertionError(f"HTTP {response.status_code} answered as {media!r}, not application/json")
    return None
