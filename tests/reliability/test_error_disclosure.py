"""What an error tells a caller: that a source is unavailable, never where it is.

Found by probing (issue 15): a live SQL error carried the driver's text to API callers, and
psycopg's text names the database host and port ("connection to server at "127.0.0.1", port
N failed: Connection refused"). The details belong in the log, for operators.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from apinode.errors import SourceUnavailable
from apinode.loader import load_definition
from apinode.sources import make_source
from tests.reliability.servers import FEATURES_DIR


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


@pytest.mark.timeout(60)
def test_a_live_sql_error_says_unavailable_not_where_the_database_is(caplog):
    port = closed_port()
    env = {
        "APINODE_SOURCE": "sql",
        "APINODE_SQL_MODE": "live",
        "APINODE_SQL_URL": f"postgresql://app@127.0.0.1:{port}/mesh",
        "APINODE_SQL_PASSWORD": "not-a-secret",
        "APINODE_SQL_TIMEOUT_SECONDS": "2",
    }
    definition = load_definition(FEATURES_DIR, env)
    source = make_source(definition.tables["demographics"], env, 5.0)

    async def ask():
        try:
            return await source.rows_many(["C0000001"])
        finally:
            await source.stop()

    with caplog.at_level(logging.WARNING), pytest.raises(SourceUnavailable) as raised:
        asyncio.run(ask())
    body = str(raised.value.body())
    assert "database unavailable" in raised.value.message
    for secret in (str(port), "127.0.0.1", "mesh", "app@", "not-a-secret"):
        assert secret not in body, f"the caller learns {secret!r}: {body}"
    assert str(port) in caplog.text, "the database's reason is not in the log for operators"
    assert "not-a-secret" not in caplog.text
