"""The schemathesis command line aimed at one running service's swagger, as both fuzzing suites run it."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.apinode_proc import API_KEY

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def schemathesis_command(url: str, service: str, *options: str) -> list[str]:
    """``schemathesis run`` on the service's swagger with the test key, no example database, two
    workers and a 10 s request timeout, plus ``options`` (checks, mode, seed, examples)."""
    return [
        str(SCHEMATHESIS),
        "run",
        f"{url}/public/api/v1/{service}/swagger",
        "--url",
        url,
        "-H",
        f"Authorization: Bearer {API_KEY}",
        "--generation-database",
        "none",
        "--no-color",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        *options,
    ]
