"""Read deadlines kept by one periodic sweep (apinode/protocol.py) instead of a timer per request.

The sweep stops while no connection is reading a request and restarts with the next one; a
deadline stamped for one request must not outlive it. These fail if the sweep does not restart
after a quiet spell (a slow client then holds its connection for ever) or if a finished
request's deadline is left armed (a keep-alive connection is cut in the middle of the next one).
The first also caught a late head on a reused connection closed without its 408: the timeout
looked at the previous request's answer (already sent) and stayed silent.
"""

from __future__ import annotations

import socket
import time

from tests.apinode_proc import API_KEY, ApiNodeProcess, server_env

LOOKUP = b"/public/api/v1/customer-features/behavior/lookup"
TIMEOUT = 1.0  # head and body deadlines of these servers; the sweep runs every TIMEOUT / 8


def _request(customer: str) -> bytes:
    body = b'{"data":{"customer_id":"%s"}}' % customer.encode()
    return (
        b"POST " + LOOKUP + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


def _answer(sock: socket.socket) -> bytes:
    """One whole answer (head and Content-Length body) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        body += chunk
    return head + b"\r\n\r\n" + body


def _server(fixture_services):
    env = server_env(APINODE_HEADER_TIMEOUT_SECONDS=str(TIMEOUT), APINODE_BODY_TIMEOUT_SECONDS=str(TIMEOUT))
    return ApiNodeProcess(fixture_services["customer-features"], env).start()


def test_a_slow_head_after_a_quiet_spell_still_gets_its_408(fixture_services):
    with _server(fixture_services) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_request("C0000001"))
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(3 * TIMEOUT)  # nothing is being read: the sweep has stopped
        sock.sendall(b"POST " + LOOKUP + b" HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ") and b"headers not received" in answer, answer
    assert waited < TIMEOUT + 3, f"the late head was cut only after {waited:.1f}s (deadline {TIMEOUT:g}s)"


def test_a_finished_requests_deadline_does_not_cut_the_next_request(fixture_services):
    with _server(fixture_services) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for customer in ("C0000001", "C0000002"):
            sock.sendall(_request(customer))
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(2 * TIMEOUT)  # idle keep-alive past the deadlines the request had
        # The next request arrives in two parts, each well within its own deadline.
        request = _request("C0000003")
        sock.sendall(request[:20])
        time.sleep(TIMEOUT / 2)
        sock.sendall(request[20:])
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"C0000003" in answer, answer


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(fixture_services):
    """The keep-alive timeout is one of the sweep's deadlines (uvicorn's timer per answer is not
    armed): an idle connection is closed silently once it has been idle that long, not before,
    and each request starts its idle time again."""
    keep_alive = 2.0
    env = server_env(
        APINODE_HEADER_TIMEOUT_SECONDS=str(TIMEOUT), APINODE_BODY_TIMEOUT_SECONDS=str(TIMEOUT),
        APINODE_KEEP_ALIVE_SECONDS=str(keep_alive),
    )
    with ApiNodeProcess(fixture_services["customer-features"], env).start() as server, socket.create_connection(
        ("127.0.0.1", server.port), timeout=10
    ) as sock:
        for customer in ("C0000001", "C0000002", "C0000003"):
            sock.sendall(_request(customer))
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(keep_alive * 0.6)  # idle, but less than the timeout: still open
        sock.sendall(_request("C0000004"))
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        left = sock.recv(65536)  # nothing more is sent: the server closes the idle connection
        waited = time.monotonic() - started
    assert left == b"", f"an idle keep-alive connection got {left!r} instead of a silent close"
    assert keep_alive - 0.2 <= waited < keep_alive + 2, f"closed after {waited:.1f}s idle (timeout {keep_alive:g}s)"


# The parser callbacks uvicorn 0.54 defines, as apinode/protocol.py folds them in (it no longer
# calls them through super()): a uvicorn that changes one of them must be read again before use.
_FOLDED = {
    "on_message_begin": "96d377fd",
    "on_url": "37be44e9",
    "on_message_complete": "1fbad42d",
    "on_response_complete": "64e254f2",
}


def test_the_uvicorn_callbacks_folded_into_the_protocol_are_the_ones_it_was_written_against():
    import hashlib
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    changed = {
        name: digest
        for name, digest in _FOLDED.items()
        if hashlib.sha256(inspect.getsource(getattr(HttpToolsProtocol, name)).encode()).hexdigest()[:8] != digest
    }
    assert not changed, (
        f"uvicorn's {', '.join(changed)} changed since apinode/protocol.py folded them in: read the new "
        "code, carry the change over, then update the digests here"
    )
