"""The two databases the batch and service frameworks keep their state in.

SQLite (the embedded default: ``corral local``, one instance) in WAL mode,
and PostgreSQL (``--database postgresql://…``: the store several instances
share, one leading; see store.py's fencing). The stores write one SQL
dialect, the common part of both: ``?`` placeholders (``%s`` for psycopg),
``INSERT … ON CONFLICT (id) DO UPDATE``, ``REAL`` (``DOUBLE PRECISION`` on
PostgreSQL, whose ``REAL`` is 4 bytes: timestamps would lose their seconds),
and an insertion order column (SQLite's ``rowid``; a ``seq BIGSERIAL`` that
this module adds to every table on PostgreSQL).

psycopg 3 is synchronous here, like sqlite3: the engines write on the event
loop, each write a few milliseconds on a local network, and a write must
finish before the update that caused it is acknowledged anyway.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from corral.errors import CorralError

_TABLE_RE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \(")


class DatabaseError(CorralError):
    """The database cannot be opened or used; the message names it."""


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    #: "sqlite" or "postgresql"
    kind: str
    #: the column rows are ordered by when their insertion order matters
    order_column: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
    def script(self, schema: str) -> None: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def columns(self, table: str) -> set[str]: ...
    def close(self) -> None: ...


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_database(target: Path | str) -> Database:
    """A PostgreSQL URL, else a SQLite file (or ``:memory:``)."""
    text = str(target)
    if is_postgres_url(text):
        return PostgresDatabase(text)
    return SqliteDatabase(text)


def describe(target: Path | str) -> str:
    """``target`` for logs and records, without a password."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", str(target))


class SqliteDatabase:
    kind = "sqlite"
    order_column = "rowid"

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(sql, tuple(params))

    def script(self, schema: str) -> None:
        self.db.executescript(schema)

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self.db.close()


class PostgresDatabase:
    kind = "postgresql"
    order_column = "seq"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise DatabaseError(
                "a postgresql:// database needs psycopg: pip install 'psycopg[binary]'"
            ) from None
        self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        try:
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise DatabaseError(f"cannot open the database {describe(url)}: {str(e).strip()}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        # PostgreSQL has a boolean type and will not put one in an INTEGER column.
        values = tuple(int(v) if isinstance(v, bool) else v for v in params)
        return self.db.execute(sql.replace("?", "%s"), values)

    def script(self, schema: str) -> None:
        adapted = _TABLE_RE.sub(r"CREATE TABLE IF NOT EXISTS \1 (seq BIGSERIAL, ", schema)
        adapted = re.sub(r"\bREAL\b", "DOUBLE PRECISION", adapted)
        self.db.execute(adapted)

    def begin(self) -> None:
        self.db.execute("BEGIN")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def columns(self, table: str) -> set[str]:
        cur = self.db.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        )
        return {r[0] for r in cur.fetchall()}

    def close(self) -> None:
        self.db.close()
