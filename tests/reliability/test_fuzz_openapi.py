"""Schemathesis, further than tests/services: negative data, custom checks, a bystander.

tests/services runs every phase with the built-in checks. Here: mostly invalid data (negative
mode), more examples, two extra checks (every error has the Dataiku error shape; every answer is
JSON), fixed seed, bounded cases, and a well-behaved caller that must keep getting right answers
while the fuzzer hammers the same process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.bystander import bystander
from tests.reliability.servers import API_KEY, REPO
from tests.schemathesis_cli import schemathesis_command

HOOKS = Path(__file__).with_name("fuzz_hooks.py")


def fuzz(url: str, service: str, mode: str, examples: int, workdir: Path) -> subprocess.CompletedProcess:
    command = schemathesis_command(
        url,
        service,
        "--mode",
        mode,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
        "ignored_auth,dataiku_error_body,json_content_type",
        "--seed",
        "80808",
        "--max-examples",
        str(examples),
        "--phases",
        "examples,coverage,fuzzing",
    )
    env = {
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(workdir),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=workdir, env=env)


@pytest.mark.timeout(480)
@pytest.mark.parametrize("target", ["customer-features", "customer-scoring"])
def test_negative_fuzzing_gets_clear_errors_and_hurts_nobody(
    target, shared_features, shared_scoring, golden, tmp_path
):
    service = shared_features if target == "customer-features" else shared_scoring
    calls = golden.features_calls() if target == "customer-features" else golden.scoring_calls()

    async def scenario():
        async with bystander(service.url, calls, API_KEY):
            return await asyncio.to_thread(fuzz, service.url, target, "negative", 60, tmp_path)

    result = asyncio.run(scenario())
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:] + "\n" + service.log_tail(20)
    assert "passed" in result.stdout, result.stdout[-3000:]
