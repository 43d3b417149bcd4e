"""The batch service's durable state: SQLite in WAL mode, or PostgreSQL
shared by several instances (sql.py; one leads, the others' writes fenced).

Jobs, their tasks, every attempt (the task id the master saw, agent, state,
exit code) and periodic schedules. Every change is committed before the
status update that caused it is acknowledged, and every attempt before its
launch is sent, so a killed service restarts knowing exactly what ran.
``synchronous=NORMAL`` in WAL mode survives a killed process; only a power
loss may lose the last commits (then the master's reconciliation still tells
the truth about tasks that ran).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from corral.errors import CorralError
from corral.frameworks.batch.sql import Database, describe, open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL,
    submitted_at REAL NOT NULL, finished_at REAL NOT NULL DEFAULT 0, periodic TEXT NOT NULL DEFAULT '',
    scheduled_at REAL NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, grp TEXT NOT NULL, idx INTEGER NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0, current TEXT NOT NULL DEFAULT '',
    agent_id TEXT NOT NULL DEFAULT '', hostname TEXT NOT NULL DEFAULT '',
    exit_code INTEGER, message TEXT NOT NULL DEFAULT '', reschedules INTEGER NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks (job_id);
CREATE TABLE IF NOT EXISTS attempts (
    id TEXT PRIMARY KEY, task TEXT NOT NULL, number INTEGER NOT NULL,
    agent_id TEXT NOT NULL, hostname TEXT NOT NULL, state TEXT NOT NULL,
    launched_at REAL NOT NULL, finished_at REAL NOT NULL DEFAULT 0,
    exit_code INTEGER, signal INTEGER, reason TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '', timed_out INTEGER NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL DEFAULT 0, started_at REAL NOT NULL DEFAULT 0,
    cpu_time_s REAL, mem_peak_bytes BIGINT
);
CREATE INDEX IF NOT EXISTS attempts_task ON attempts (task);
CREATE TABLE IF NOT EXISTS periodic (
    id TEXT PRIMARY KEY, schedule TEXT NOT NULL, spec TEXT NOT NULL,
    next_run REAL NOT NULL, last_job TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'ACTIVE', message TEXT NOT NULL DEFAULT ''
);
"""
#: who leads among instances sharing a PostgreSQL store (see Store, "Fencing")
LEADER_SCHEMA = """
CREATE TABLE IF NOT EXISTS leader (id INTEGER PRIMARY KEY, epoch BIGINT NOT NULL, holder TEXT NOT NULL,
    since REAL NOT NULL);
"""
#: columns added after a table was first released: (table, column, declaration);
#: a database made before gets them with ALTER TABLE when it is opened
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("periodic", "state", "TEXT NOT NULL DEFAULT 'ACTIVE'"),
    ("periodic", "message", "TEXT NOT NULL DEFAULT ''"),
    ("tasks", "reschedules", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "scheduled_at", "REAL NOT NULL DEFAULT 0"),
    ("jobs", "held", "INTEGER NOT NULL DEFAULT 0"),
    ("tasks", "queued_at", "REAL NOT NULL DEFAULT 0"),
    ("attempts", "queued_at", "REAL NOT NULL DEFAULT 0"),
    ("attempts", "started_at", "REAL NOT NULL DEFAULT 0"),
    ("attempts", "cpu_time_s", "REAL"),
    ("attempts", "mem_peak_bytes", "BIGINT"),
)


@dataclass
class JobRow:
    id: str
    name: str
    spec: str  # the job's table as JSON
    state: str  # RUNNING, SUCCEEDED, FAILED, CANCELLED
    submitted_at: float
    finished_at: float = 0.0
    periodic: str = ""
    #: a periodic job's run: the time it was due (its cron slot), 0 otherwise
    scheduled_at: float = 0.0
    #: held by a user (``corral hold``): its pending tasks do not launch
    held: bool = False


@dataclass
class TaskRow:
    id: str  # JOB.GROUP.INDEX
    job_id: str
    grp: str
    idx: int
    #: WAITING (dependencies), PENDING, STAGING, RUNNING, FINISHED, FAILED, CANCELLED, SKIPPED
    state: str
    attempts: int = 0
    failures: int = 0
    not_before: float = 0.0
    current: str = ""  # the live attempt's id
    agent_id: str = ""
    hostname: str = ""
    exit_code: int | None = None
    message: str = ""
    #: tries ended by the infrastructure (agent lost, launch lost), not charged to ``failures``
    reschedules: int = 0
    #: when it last became PENDING (accounting: how long it queued)
    queued_at: float = 0.0


@dataclass
class AttemptRow:
    id: str  # the task id the master sees: JOB.GROUP.INDEX.aN
    task: str
    number: int
    agent_id: str
    hostname: str
    state: str  # a TaskState name
    launched_at: float
    finished_at: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    message: str = ""
    timed_out: bool = False
    #: accounting: when its task last became pending (this host's clock), when
    #: it started running and ended (the agent's clock, from its updates), and
    #: what its cgroup used (None: not measured, e.g. it never started)
    queued_at: float = 0.0
    started_at: float = 0.0
    cpu_time_s: float | None = None
    mem_peak_bytes: int | None = None


@dataclass
class PeriodicRow:
    id: str
    schedule: str
    spec: str
    next_run: float
    last_job: str = ""
    created_at: float = 0.0
    #: ACTIVE, or FAILED: its stored spec or schedule cannot be read (``message`` says why)
    #: and it no longer runs; submitting it again replaces it
    state: str = "ACTIVE"
    message: str = ""


@dataclass
class Snapshot:
    """Everything in the store, for a restart."""

    framework_id: str = ""
    jobs: list[JobRow] = field(default_factory=list)
    tasks: list[TaskRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    periodic: list[PeriodicRow] = field(default_factory=list)


_TABLES: dict[type[Any], str] = {
    JobRow: "jobs",
    TaskRow: "tasks",
    AttemptRow: "attempts",
    PeriodicRow: "periodic",
}


class FencedError(CorralError):
    """Another instance of this framework leads now: this one's writes are refused."""


class Store:
    """One database (sql.py: SQLite, or PostgreSQL shared by several
    instances); writes go through :meth:`save` inside :meth:`transaction`.

    A subclass with its own ``schema`` and ``tables`` (row class -> table; a
    ``meta`` table is expected) reuses the rest (the service framework does).

    **Fencing** (PostgreSQL): an instance that becomes leader calls
    :meth:`lead`, which bumps the ``leader`` row's epoch; from then on every
    transaction of this store first reads that row ``FOR SHARE`` and raises
    FencedError if another instance has bumped it since. The bump waits for
    the share locks of transactions in flight, so a deposed leader's write
    either committed before the new leader loaded the state, or fails: it can
    neither record an attempt nor (since a launch is sent only after its
    attempt is recorded) launch one.
    """

    schema = SCHEMA
    tables: dict[type[Any], str] = _TABLES
    added_columns = ADDED_COLUMNS

    def __init__(self, path: Path | str, epoch: int | None = None) -> None:
        self.path = describe(path)
        self.db_target = path
        self.db: Database = open_database(path)
        self.db.script(self.schema + LEADER_SCHEMA)
        self._add_columns()
        self._depth = 0
        #: the epoch this instance leads in (None: not fenced, a single instance)
        self.epoch = epoch

    @property
    def shared(self) -> bool:
        """Whether several instances can share this store (PostgreSQL)."""
        return self.db.kind == "postgresql"

    def _add_columns(self) -> None:
        """Bring a database made by an older version up to this schema."""
        mine = set(self.tables.values())
        for table, column, declaration in self.added_columns:
            if table not in mine:
                continue
            if column not in self.db.columns(table):
                kind = declaration.replace("REAL", "DOUBLE PRECISION") if self.shared else declaration
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    def lead(self, holder: str, now: float) -> int:
        """Become the one instance that writes: a new epoch, returned; every
        later write of another instance is refused (FencedError)."""
        if not self.shared:
            raise ValueError("only a PostgreSQL store is shared by several instances")
        self.epoch = take_lead(self.db_target, holder, now)
        return self.epoch

    def leader(self) -> tuple[int, str] | None:
        """The epoch and holder of the instance that leads, if one ever did."""
        row = self.db.execute("SELECT epoch, holder FROM leader WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit (nested uses join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.begin()
        self._depth = 1
        try:
            if self.epoch is not None:
                self._check_fence()
            yield
        except BaseException:
            self.db.rollback()
            raise
        else:
            self.db.commit()
        finally:
            self._depth = 0

    def _check_fence(self) -> None:
        row = self.db.execute("SELECT epoch, holder FROM leader WHERE id = 1 FOR SHARE").fetchone()
        if row is None or int(row[0]) != self.epoch:
            holder = "nobody" if row is None else f"{row[1]} (epoch {row[0]})"
            raise FencedError(f"this instance (epoch {self.epoch}) no longer leads: {holder} does")

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write: on its own it is a transaction when the store is fenced."""
        if self._depth or self.epoch is None:
            yield
            return
        with self.transaction():
            yield

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """A write of a subclass's own (fenced like :meth:`save`)."""
        with self._write():
            self.db.execute(sql, params)

    def save(self, row: Any) -> None:
        """Insert or replace one row (commits at once outside a transaction)."""
        cls = type(row)
        if cls not in _UPSERTS:
            _UPSERTS[cls] = _upsert(cls, self.tables[cls])
        sql, names = _UPSERTS[cls]
        values = tuple(getattr(row, n) for n in names)  # not asdict(): it deep-copies, 5x slower
        with self._write():
            self.db.execute(sql, values)

    def delete_periodic(self, periodic_id: str) -> None:
        self.execute("DELETE FROM periodic WHERE id = ?", (periodic_id,))

    def set_framework_id(self, framework_id: str) -> None:
        self.execute(
            "INSERT INTO meta (key, value) VALUES ('framework_id', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (framework_id,),
        )

    def framework_id(self) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'framework_id'").fetchone()
        return str(row[0]) if row else ""

    def load(self) -> Snapshot:
        """Read everything back."""
        snap = Snapshot()
        snap.framework_id = self.framework_id()
        order = self.db.order_column
        snap.jobs = self._rows(JobRow, "ORDER BY submitted_at, id")
        snap.tasks = self._rows(TaskRow, f"ORDER BY {order}")
        snap.attempts = self._rows(AttemptRow, f"ORDER BY {order}")
        snap.periodic = self._rows(PeriodicRow, "ORDER BY id")
        for a in snap.attempts:
            a.timed_out = bool(a.timed_out)
        for j in snap.jobs:
            j.held = bool(j.held)
        return snap

    def _rows(self, cls: type[Any], order: str) -> list[Any]:
        names = [f.name for f in fields(cls)]
        cur = self.db.execute(f"SELECT {', '.join(names)} FROM {self.tables[cls]} {order}")
        return [cls(**dict(zip(names, r, strict=True))) for r in cur.fetchall()]


def take_lead(target: Path | str, holder: str, now: float | None = None) -> int:
    """(blocking) A new epoch for ``holder`` in the shared database at
    ``target``: from now on only a store opened with it may write."""
    db = open_database(target)
    try:
        db.script(LEADER_SCHEMA)
        db.begin()
        try:
            row = db.execute(
                "INSERT INTO leader (id, epoch, holder, since) VALUES (1, 1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET epoch = leader.epoch + 1, holder = excluded.holder, "
                "since = excluded.since RETURNING epoch",
                (holder, time.time() if now is None else now),
            ).fetchone()
        except BaseException:
            db.rollback()
            raise
        db.commit()
        return int(row[0])
    finally:
        db.close()


def _upsert(cls: type[Any], table: str) -> tuple[str, tuple[str, ...]]:
    """The upsert of a row type and its columns. An upsert (not REPLACE) keeps
    the rowid, so rows load back in the order they were made."""
    names = tuple(f.name for f in fields(cls))
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c != "id")
    marks = ", ".join("?" for _ in names)
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"
    sql += f" ON CONFLICT(id) DO UPDATE SET {updates}"
    return sql, names


#: per row type (a subclass's too, made on first use)
_UPSERTS = {cls: _upsert(cls, table) for cls, table in _TABLES.items()}


def dumps(data: Any) -> str:
    """JSON for a spec column (sorted keys, so equal specs compare equal)."""
    return json.dumps(data, sort_keys=True)
