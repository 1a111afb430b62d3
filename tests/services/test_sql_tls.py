"""The database URL the Pulumi program writes reaches libpq with its CA bundle: verify-full really verifies.

A fake PostgreSQL on 127.0.0.1 accepts the SSLRequest ('S') and then stops; what libpq does in
between shows which root certificate it was given. libpq loads ``sslrootcert`` right after the server
agrees to TLS and, with ``verify-full``, refuses to go on without it (PostgreSQL docs, libpq "SSL
Support", 34.19.1: the root certificate file is "~/.postgresql/root.crt" unless sslrootcert says otherwise).
"""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from apinode.definition import SqlSpec
from apinode.sql import make_engine
from infra.mocks import stack_config
from infra.config import parse_settings
from infra.workload import DATABASE_CA_DIR, DATABASE_CA_KEY, config_data

SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


class FakeTlsPostgres:
    """Answers one SSLRequest with 'S' (TLS accepted), then closes: enough for libpq to reveal its CA."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.requests.append(conn.recv(8))
                conn.sendall(b"S")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_server():
    server = FakeTlsPostgres()
    yield server
    server.close()


def prod_sql_url(port: int) -> str:
    """customer-features' APINODE_SQL_URL exactly as prod's ConfigMap carries it, pointed at the fake."""
    config = {**stack_config("prod"), "data-mesh:databasePassword": "pw"}
    settings = parse_settings(config, "prod", frozenset({"data-mesh:databasePassword"}))
    features = settings.service("customer-features")
    url = config_data(features, settings.database, None)["APINODE_SQL_URL"]
    return url.replace(f"@{settings.database.host}:{settings.database.port}/", f"@127.0.0.1:{port}/")


def connect_error(url: str) -> str:
    spec = SqlSpec(url=url, table="behavior", query=None, key_query=None, mode="cached", refresh_seconds=60,
                   pool_size=1, timeout_seconds=3, password_env="APINODE_SQL_PASSWORD")
    engine = make_engine(spec, {"APINODE_SQL_PASSWORD": "pw"}, live=False)
    with pytest.raises(sa.exc.OperationalError) as caught:
        with engine.connect():
            pass
    engine.dispose()
    return str(caught.value.orig)


def test_prod_url_hands_libpq_the_mounted_ca_bundle(fake_server: FakeTlsPostgres) -> None:
    url = prod_sql_url(fake_server.port)
    assert "sslmode=verify-full" in url and f"sslrootcert={DATABASE_CA_DIR}/{DATABASE_CA_KEY}" in url
    message = connect_error(url)
    assert fake_server.requests and fake_server.requests[0] == SSL_REQUEST, "libpq must ask for TLS first"
    # Not mounted on this machine: libpq names the very path the pod mounts the ConfigMap at.
    assert f"{DATABASE_CA_DIR}/{DATABASE_CA_KEY}" in message, message


def test_with_the_bundle_present_libpq_goes_on_to_the_handshake(fake_server: FakeTlsPostgres,
                                                                tmp_path: Path) -> None:
    bundle = tmp_path / DATABASE_CA_KEY
    bundle.write_text((Path(__file__).resolve().parents[2] / "certs" / "features-db-ca.pem").read_text())
    url = prod_sql_url(fake_server.port).replace(f"{DATABASE_CA_DIR}/{DATABASE_CA_KEY}", str(bundle))
    message = connect_error(url)
    assert "root certificate file" not in message and str(bundle) not in message, message


def test_require_without_a_bundle_never_checks_the_server(fake_server: FakeTlsPostgres) -> None:
    """The old default: TLS, but any certificate (or an impostor's) is accepted; no CA is even read."""
    url = prod_sql_url(fake_server.port).split("?")[0] + "?sslmode=require"
    message = connect_error(url)
    assert "root certificate" not in message, message


def test_committed_ca_bundle_is_a_certificate_openssl_reads() -> None:
    bundle = Path(__file__).resolve().parents[2] / "certs" / "features-db-ca.pem"
    result = subprocess.run(["openssl", "x509", "-in", str(bundle), "-noout", "-subject"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and "CN" in result.stdout, result.stderr
