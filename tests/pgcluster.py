"""A throwaway PostgreSQL 15 cluster for tests: a temp dir, a free 127.0.0.1 port, password (scram) over TCP.

PostgreSQL refuses to run as root, so when the tests run as root every server command runs as the
``postgres`` user (``runuser``) in a directory handed to it. Stop it with ``stop()`` (``pg_ctl``);
``stop()`` then ``start()`` simulates an outage and recovery on the same port.

    with PgCluster() as db:
        db.execute("CREATE TABLE t (k text PRIMARY KEY, v int)")
        url = db.url  # postgresql://apinode@127.0.0.1:<port>/mesh  (password: db.password)
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.apinode_proc import free_port

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# service.yaml column types as PostgreSQL column types.
SQL_TYPES = {
    "string": "text",
    "date": "date",
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
}


def available() -> str | None:
    """None when a cluster can be started here, else the reason it cannot."""
    if not (BIN / "initdb").exists():
        return f"PostgreSQL binaries not found in {BIN} (install postgresql-15 or set PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


class PgCluster:
    """One PostgreSQL server we own, with a login role and a database for the application."""

    def __init__(
        self, user: str = "apinode", password: str = "pg-test-secret", database: str = "mesh"
    ) -> None:
        self.user, self.password, self.database = user, password, database
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pgcluster-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.running = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL without the password (pass it separately, as the services do)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        return (
            f"host=127.0.0.1 port={self.port} dbname={self.database} user={self.user}"
            f" password={self.password}"
        )

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                f"\n{self.log.read_text() if self.log.exists() else ''}"
            )
        return result

    def init(self) -> None:
        self._run(
            str(BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> PgCluster:
        if not self.data.exists():
            self.init()
            first = True
        else:
            first = False
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True
        if first:
            self._psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
            self._psql(f"CREATE DATABASE {self.database} OWNER {self.user}")
        return self

    def _psql(self, sql: str) -> None:
        self._run(
            str(BIN / "psql"),
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        )

    def stop(self) -> None:
        if self.running:
            self._run(
                str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", check=False
            )
            self.running = False

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def execute(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        """Run one statement as the application user over TCP; the rows it returns, if any."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            with connection.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def create_table(self, table: str, columns: dict[str, str], key: str, rows: Iterable[Sequence]) -> None:
        """A table of ``columns`` (name: SQL type) keyed by ``key``, filled with ``rows``."""
        ddl = ", ".join(f"{c} {t}" + (" PRIMARY KEY" if c == key else "") for c, t in columns.items())
        self.execute(f"CREATE TABLE {table} ({ddl})")
        self.insert(table, list(columns), rows)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


@contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """A started cluster, destroyed afterwards; the test is skipped, saying why, where none can run."""
    reason = available()
    if reason:
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    with PgCluster() as cluster:
        yield cluster


def load_bundles(cluster: PgCluster, service_dir: Path) -> None:
    """Every table of the service at ``service_dir``, created under its SQL name and filled with its
    bundled rows, so answers from the SQL-backed service equal those from the bundled one."""
    from apinode.bundle import read_bundle

    definition = yaml.safe_load((Path(service_dir) / "service.yaml").read_text())
    for table in definition["tables"].values():
        kinds = {c: spec["type"] if isinstance(spec, dict) else spec for c, spec in table["columns"].items()}
        columns = {c: SQL_TYPES[kind] for c, kind in kinds.items()}
        data = read_bundle(Path(service_dir) / table["bundled"]["path"])
        values = [(data[c].decode() if hasattr(data[c], "decode") else data[c]).tolist() for c in columns]
        cluster.create_table(table["sql"]["table"], columns, table["key"], zip(*values))
