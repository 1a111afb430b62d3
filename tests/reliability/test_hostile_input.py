"""Hostile input: every bad request gets a bounded, clear 4xx, and a well-behaved caller never suffers.

The limits are set through the environment to values other than the defaults, so these tests
also prove the knobs are honoured: body 256 KiB, batch 500 items, body timeout 2 s.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import pytest

from tests.reliability import rawhttp
from tests.reliability.bystander import bystander
from tests.reliability.loadgen import Call, Load, describe
from tests.reliability.servers import API_KEY, FEATURES_DIR, SCORING_DIR, Service, server_env
from tests.reliability.workload import API, FEATURES, SCORING, prediction_of

MAX_BODY = 256 * 1024
MAX_BATCH = 500
BODY_TIMEOUT = 2.0
LIMITS = {
    "APINODE_MAX_BODY_BYTES": str(MAX_BODY),
    "APINODE_MAX_BATCH_ITEMS": str(MAX_BATCH),
    "APINODE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "APINODE_REQUEST_TIMEOUT_SECONDS": "5",
}
# How long a misbehaving caller may hold on before the server must have answered or closed.
ANSWER_BOUND = BODY_TIMEOUT + 6.0
LOOKUP = f"{API}/{FEATURES}/demographics/lookup"
LOOKUP_MULTI = f"{API}/{FEATURES}/demographics/lookup-multi"
PREDICT = f"{API}/{SCORING}/high-spender/predict"
PREDICT_MULTI = f"{API}/{SCORING}/high-spender/predict-multi"


@pytest.fixture(scope="module")
def features(log_dir):
    with Service(
        FEATURES_DIR, server_env(**LIMITS), log_dir=log_dir, name="hostile-features"
    ).start() as service:
        yield service


@pytest.fixture(scope="module")
def scoring(log_dir):
    env = server_env(APINODE_ENRICHMENT="bundled", **LIMITS)
    with Service(SCORING_DIR, env, log_dir=log_dir, name="hostile-scoring").start() as service:
        yield service


def assert_clear_error(response: httpx.Response | rawhttp.RawResponse, statuses: tuple[int, ...], what: str):
    status = response.status_code if isinstance(response, httpx.Response) else response.status
    body = response.content if isinstance(response, httpx.Response) else response.body
    assert status in statuses, f"{what}: HTTP {status} (expected {statuses}): {body[:300]!r}"
    try:
        payload = json.loads(body)
    except ValueError:
        raise AssertionError(f"{what}: HTTP {status} with a body that is not JSON: {body[:200]!r}") from None
    assert isinstance(payload, dict) and payload.get("errorType") and payload.get("message"), (
        f"{what}: unclear error body {payload}"
    )
    return payload


def post(
    service: Service, path: str, content: bytes, content_type: str = "application/json", **headers: str
) -> httpx.Response:
    with httpx.Client(timeout=ANSWER_BOUND) as client:
        return client.post(
            service.url + path,
            content=content,
            auth=(API_KEY, ""),
            headers={"content-type": content_type, **headers},
        )


# Bodies, batches, nesting -------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_oversized_bodies_are_refused_without_reading_them(features, golden):
    async def scenario():
        async with bystander(features.url, golden.features_calls(), API_KEY):
            # Declared too large: refused from the headers, before the 20 MB are sent.
            head, _ = rawhttp.request_bytes(LOOKUP, b"", API_KEY, content_length=20_000_000)

            # Blocking socket work runs in a thread: on the event loop it would starve the bystander.
            def declared_too_large():
                with rawhttp.connect(features.port) as sock:
                    sock.sendall(head + b"{" * 65536)
                    return rawhttp.read_response(sock, ANSWER_BOUND)

            answer = await asyncio.to_thread(declared_too_large)
            assert_clear_error(answer, (413,), "declared 20 MB body")

            # Chunked, no length: refused once the limit is crossed.
            chunked_head = (
                f"POST {LOOKUP} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
            chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"

            def chunked_over_the_limit():
                with rawhttp.connect(features.port) as sock:
                    sock.sendall(chunked_head)
                    try:
                        for _ in range(4 * MAX_BODY // 0x4000):
                            sock.sendall(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the server answered and closed early: what we want
                    return rawhttp.read_response(sock, ANSWER_BOUND)

            answer = await asyncio.to_thread(chunked_over_the_limit)
            if answer.status is not None:
                assert_clear_error(answer, (413,), "chunked body over the limit")
            else:
                assert answer.closed_without_answer, f"chunked body over the limit: {answer}"

            # At the limit it is served; one byte more it is not.
            valid = json.dumps({"data": {"customer_id": golden.ids[0]}}).encode()
            padded = valid + b" " * (MAX_BODY - len(valid))
            response = await asyncio.to_thread(post, features, LOOKUP, padded)
            assert response.status_code == 200, (
                f"body of exactly the limit: {response.status_code} {response.text[:200]}"
            )
            response = await asyncio.to_thread(post, features, LOOKUP, padded + b" ")
            assert_clear_error(response, (413,), "body one byte over the limit")

    asyncio.run(scenario())


def nested(depth: int, leaf: str = "1") -> tuple[str, str]:
    return "[" * depth + leaf + "]" * depth, '{"a":' * depth + leaf + "}" * depth


@pytest.mark.timeout(120)
def test_deeply_nested_json_gets_a_clear_400(features, scoring, golden):
    async def scenario():
        async with (
            bystander(features.url, golden.features_calls(), API_KEY),
            bystander(scoring.url, golden.scoring_calls(), API_KEY),
        ):
            for depth in (200, 5_000, 40_000):  # 40 000 objects deep is 240 KB, under the limit
                for value in nested(depth):
                    for service, path, body in (
                        (features, LOOKUP, f'{{"data": {{"customer_id": {value}}}}}'),
                        (features, LOOKUP, f'{{"data": {value}}}'),
                        (
                            scoring,
                            PREDICT,
                            f'{{"features": {{"customer_id": "{golden.ids[0]}", "age": {value}}}}}',
                        ),
                        (scoring, PREDICT_MULTI, f'{{"items": {value}}}'),
                    ):
                        response = await asyncio.to_thread(post, service, path, body.encode())
                        assert_clear_error(response, (400,), f"{path} nested {depth} deep ({value[:3]}...)")

    asyncio.run(scenario())


@pytest.mark.timeout(180)
def test_batch_size_limit_is_enforced_and_a_full_batch_is_answered_in_full(features, scoring, golden):
    rng = random.Random(5)
    ids = [rng.choice(golden.ids) for _ in range(MAX_BATCH)]

    async def scenario():
        async with (
            bystander(features.url, golden.features_calls(), API_KEY),
            bystander(scoring.url, golden.scoring_calls(), API_KEY),
        ):
            full = {"items": [{"features": {"customer_id": c}} for c in ids]}
            response = await asyncio.to_thread(post, scoring, PREDICT_MULTI, json.dumps(full).encode())
            assert response.status_code == 200, response.text[:300]
            results = response.json()["results"]
            assert len(results) == MAX_BATCH
            wrong = [
                c
                for c, r in zip(ids, results)
                if (r.get("prediction"), r.get("ignored")) != golden.predictions[c][::2]
            ]
            assert not wrong, f"a full batch answered wrongly for {wrong[:5]}"

            over = {"items": full["items"] + [{"features": {"customer_id": ids[0]}}]}
            payload = assert_clear_error(
                await asyncio.to_thread(post, scoring, PREDICT_MULTI, json.dumps(over).encode()),
                (413,),
                f"predict-multi of {MAX_BATCH + 1}",
            )
            assert str(MAX_BATCH) in payload["message"] + payload.get("detailedMessage", ""), payload

            lookups = {"items": [{"data": {"customer_id": c}} for c in ids + ids[:1]]}
            assert_clear_error(
                await asyncio.to_thread(post, features, LOOKUP_MULTI, json.dumps(lookups).encode()),
                (413,),
                f"lookup-multi of {MAX_BATCH + 1}",
            )

            huge = b'{"items": [' + b",".join([b'{"features": {}}'] * 200_000) + b"]}"
            assert_clear_error(
                await asyncio.to_thread(post, scoring, PREDICT_MULTI, huge),
                (413,),
                "predict-multi of 200000 items (3 MB)",
            )

            # A storm of full batches: answered right, and the bystanders still get through.
            expected = [golden.predictions[c] for c in ids]
            storm = Load(
                scoring.url,
                [
                    lambda _: Call(
                        "full batch", PREDICT_MULTI, full, check=lambda p: full_batch_problem(p, expected)
                    )
                ],
                workers=3,
                api_key=API_KEY,
                timeout=60,
            )
            outcomes = await storm.run(6.0)
            assert outcomes and all(o.ok for o in outcomes), describe(outcomes)

    asyncio.run(scenario())


def full_batch_problem(payload, expected) -> str | None:
    got = [prediction_of(r) for r in payload.get("results") or []]
    return None if got == expected else f"a full batch answered wrongly ({len(got)} results)"


# Content types, garbage, credentials ------------------------------------------------------

WRONG_TYPES = [
    "application/xml",
    "multipart/form-data; boundary=x",
    # application/x-www-form-urlencoded is accepted since Dataiku clients may send it (docs/runtime.md).
    "image/png",
    "application/octet-stream",
]


@pytest.mark.timeout(120)
def test_wrong_content_types_get_415(features, scoring, golden):
    lookup = json.dumps({"data": {"customer_id": golden.ids[0]}}).encode()
    predict = json.dumps({"features": {"customer_id": golden.ids[0]}}).encode()
    for content_type in WRONG_TYPES:
        assert_clear_error(post(features, LOOKUP, lookup, content_type), (415,), f"lookup as {content_type}")
        assert_clear_error(
            post(scoring, PREDICT, predict, content_type), (415,), f"predict as {content_type}"
        )


GARBAGE = [
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"42",
    b"{",
    b'{"data": ',
    b"\x00\x01\x02",
    b"\xff\xfe{}",
    b'{"data": {"customer_id": "\xff\xfe"}}',
    b'{"data": {"customer_id": NaN}}',
    b'{"data": {"customer_id": 1e999}}',
    b'{"data": {"customer_id": 123456789012345678901234567890}}',
    b'{"data": null}',
    b'{"data": []}',
    b'{"data": {"customer_id": null}}',
    b'{"data": {"customer_id": 7}}',
    b'{"data": {"customer_id": true}}',
    b'{"data": {"customer_id": ["C0000001"]}}',
    b'{"data": {"customer_id": "C' + b"9" * 200_000 + b'"}}',
    b'{"data": {"customer_id": "C000\\u0000001"}}',
    b'{"data": {"customer_id": "C0000001", "customer_id": {"x": 1}}}',
    b'{"items": null}',
    b'{"items": "x"}',
    b'{"items": [1, 2]}',
    b'{"items": [{"data": 1}]}',
    b'{"features": null}',
    b'{"features": {"customer_id": "C0000001", "age": "old"}}',
    b'{"features": {"customer_id": "C0000001", "no_such_feature": 1}}',
    b'{"features": {"customer_id": "C0000001", "gender": {"$ne": null}}}',
    b'{"features": {"customer_id": "C0000001", "spend_12m": -1e308, "region": "\'; DROP TABLE x; --"}}',
    b'{"features": {"customer_id": {"__proto__": 1}}}',
    b'{"items": [{"features": []}]}',
]


@pytest.mark.timeout(120)
def test_garbage_bodies_get_a_clear_4xx_never_a_5xx(features, scoring):
    routes = [(features, LOOKUP), (features, LOOKUP_MULTI), (scoring, PREDICT), (scoring, PREDICT_MULTI)]
    failures = []
    for body in GARBAGE:
        for service, path in routes:
            response = post(service, path, body)
            if response.status_code == 200:
                continue  # e.g. an unknown key answered "not found", or a body that fits another route
            try:
                assert_clear_error(response, tuple(range(400, 500)), f"{path} {body[:60]!r}")
            except (AssertionError, ValueError) as error:
                failures.append(str(error)[:300])
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:15])
    for service in (features, scoring):
        assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200, "not ready after the garbage"


@pytest.mark.timeout(60)
def test_garbage_credentials_get_401_or_403(features, golden):
    body = json.dumps({"data": {"customer_id": golden.ids[0]}}).encode()
    for value in [
        "",
        "Basic",
        "Basic !!!notbase64",
        "Basic " + "QUFB" * 2000,
        "Bearer " + "x" * 8000,
        "Bearer",
        "Digest username=x",
        "Basic Og==",
        f"Bearer {API_KEY} extra",
        f"Bearer {API_KEY}X",
    ]:
        with httpx.Client(timeout=ANSWER_BOUND) as client:
            response = client.post(
                features.url + LOOKUP,
                content=body,
                headers={"content-type": "application/json", "authorization": value},
            )
        assert_clear_error(response, (401, 403), f"Authorization: {value[:30]!r}")


# Slow and partial requests ----------------------------------------------------------------


async def slow_client(port: int, prefix: bytes, dribble: bytes, interval: float, give_up: float) -> tuple:
    """Send ``prefix``, then ``dribble`` a byte per ``interval``; return (outcome, seconds, answer bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(prefix)
    first = asyncio.create_task(reader.read(65536))
    sent = 0
    try:
        while time.monotonic() - started < give_up:
            done, _ = await asyncio.wait([first], timeout=interval)
            if done:
                data = first.result()
                if not data:
                    return "closed", time.monotonic() - started, b""
                try:
                    data += await asyncio.wait_for(reader.read(65536), 2)
                except asyncio.TimeoutError:
                    pass
                return "answered", time.monotonic() - started, data
            if sent < len(dribble):
                try:
                    writer.write(dribble[sent : sent + 1])
                    await writer.drain()
                except ConnectionError:
                    pass
                sent += 1
        return "still open", time.monotonic() - started, b""
    except ConnectionError:
        return "closed", time.monotonic() - started, b""
    finally:
        first.cancel()
        writer.close()


def slow_requests():
    body = json.dumps({"data": {"customer_id": "C0000001"}}).encode()
    head, _ = rawhttp.request_bytes(LOOKUP, body, API_KEY)
    line, _, rest = head.partition(b"\r\n")
    return {
        # Headers that never end: a byte every half second.
        "slow-headers": (line + b"\r\n", rest[:-2] + b"X-Pad: " + b"a" * 2000, 0.5),
        # Headers complete, then not one byte of the announced body.
        "no-body": (head, b"", 0.5),
        # Headers complete, then the body a byte every half second.
        "slow-body": (head + body[:1], body[1:] * 50, 0.5),
        # A connection that never says anything.
        "silent": (b"", b"", 0.5),
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["slow-headers", "no-body", "slow-body", "silent"])
def test_slow_partial_requests_get_a_bounded_answer_and_do_not_block_others(kind, features, golden):
    prefix, dribble, interval = slow_requests()[kind]

    async def scenario():
        async with bystander(features.url, golden.features_calls(), API_KEY):
            return await asyncio.gather(
                *(slow_client(features.port, prefix, dribble, interval, ANSWER_BOUND + 5) for _ in range(30))
            )

    results = asyncio.run(scenario())
    outcomes = {}
    for outcome, _, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert "still open" not in outcomes, (
        f"{kind}: {outcomes['still open']} of 30 slow callers still held their connection after "
        f"{ANSWER_BOUND + 5:.0f}s (body timeout {BODY_TIMEOUT:g}s): the server never times them out"
    )
    for outcome, _, data in results:
        if outcome == "answered":
            status = int(data.split(b" ", 2)[1])
            assert status in (400, 408, 413, 431), f"{kind}: answered {data[:200]!r}"
            if status == 408:
                assert b"errorType" in data, f"{kind}: 408 without a clear body: {data[:300]!r}"
    assert httpx.get(f"{features.url}/readyz", timeout=5).status_code == 200


# Connection limit ---------------------------------------------------------------------------

CROWD_LIMIT = 20


@pytest.fixture
def crowded(golden, log_dir):
    """customer-features with a small connection limit, and as many silent connections as it allows."""
    env = server_env(APINODE_MAX_CONNECTIONS=str(CROWD_LIMIT), **LIMITS)
    with Service(FEATURES_DIR, env, log_dir=log_dir, name="crowded-features").start() as service:
        crowd = [rawhttp.connect(service.port) for _ in range(CROWD_LIMIT)]
        try:
            time.sleep(0.5)
            yield service
        finally:
            for sock in crowd:
                sock.close()


@pytest.mark.timeout(60)
def test_refusal_at_the_connection_limit_is_a_clear_json_503(crowded, golden):
    response = post(crowded, LOOKUP, json.dumps({"data": {"customer_id": golden.ids[0]}}).encode())
    if response.status_code != 200:
        assert_clear_error(response, (503,), f"a caller beyond {CROWD_LIMIT} connections")


@pytest.mark.timeout(60)
def test_silent_connections_at_the_limit_do_not_lock_callers_out(crowded, golden):
    """Connections that never send a request must be closed, or they are a denial of service."""
    body = json.dumps({"data": {"customer_id": golden.ids[0]}}).encode()
    deadline = time.monotonic() + ANSWER_BOUND + 5
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(post(crowded, LOOKUP, body).status_code)
        if statuses[-1] == 200:
            return
        time.sleep(0.5)
    pytest.fail(
        f"{CROWD_LIMIT} silent connections locked every other caller out for {ANSWER_BOUND + 5:.0f}s "
        f"(answers: {sorted(set(statuses))})"
    )
