"""The database: engine set-up, read and write transactions, schema migrations.

Writes are serialised per plan: a write transaction locks the plan row first (``SELECT
... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` takes the database write lock on
SQLite), so a version check and the write it guards happen atomically.

SQLite has one writer at a time, and a writer that finds the lock taken polls for it,
sleeping longer each time. Writers of a SQLite file therefore queue for it first on a
lock of their own (:class:`WriterQueue`): threads on a lock, processes on ``flock``
of a file beside the database, so each waits without polling and in turn.

Every version a write publishes is stamped with its transaction's write time
(:func:`transaction_time`), and a history read lists only versions stamped before its
horizon (:meth:`Database.history_horizon`): an instant before which no write can still
commit. A client that polls ``_since`` the horizon it was given therefore misses no
version, however long a write took to commit.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Select, Table, create_engine, event, text
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from service.models import to_millisecond, utcnow

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DEFAULT_DATABASE_URL = "sqlite:///./ipt-careplans.db"
_WRITE_OPTION = "ipt_write"
_SINGLE_OPTION = "ipt_single_statement"
# Marks a pooled SQLite connection that frees its page cache when it returns to the pool.
_RELEASE_CACHE = "ipt_release_cache"


def normalise_url(url: str) -> URL:
    """Parse a database URL; plain ``postgresql://`` URLs use the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _configure_sqlite(engine: Engine, writers: WriterQueue) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        # Every commit reaches the disk before it is answered, whatever the build's default.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # A writer takes the write lock up front so that two writers queue on the busy
        # timeout instead of failing when one upgrades a read lock.
        options = connection.get_execution_options()
        if options.get(_SINGLE_OPTION, False):
            return  # one statement alone: SQLite makes it its own transaction
        immediate = options.get(_WRITE_OPTION, False)
        if immediate:
            writers.acquire()  # given back by Database.writing/transaction at their end
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @event.listens_for(engine, "checkin")
    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        # See Database.release_cache_on_return.
        if dbapi_connection is None or not record.info.pop(_RELEASE_CACHE, False):
            return
        try:
            dbapi_connection.execute("PRAGMA shrink_memory")
        except Exception:  # only memory: the connection stays usable either way
            return


# Seconds a pooled PostgreSQL connection may rest before it is checked with a round trip
# when it is taken again (see _configure_postgresql).
PING_AFTER_IDLE = 1.0
_RETURNED_AT = "ipt_returned_at"


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # A commit is answered once it is on disk, whatever the server's default.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO on")
        dbapi_connection.commit()

    # A connection taken from the pool is checked with a round trip before it is used
    # (as SQLAlchemy's pre-ping does) only when it has rested for a second or more. Under
    # load connections go round in milliseconds, and a round trip per request would cost
    # a read about a tenth of its time; a connection the server closed (a restart, a
    # failover, idle_session_timeout) has rested longer than that by the time the server
    # answers again. A dead one is replaced, and every connection pooled before it with it.
    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE:
            return  # new, or back from its last use a moment ago
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise InvalidatePoolError() from error
            raise


@functools.cache
def _head_revision() -> str | None:
    """The newest migration shipped with the service: read from its scripts once per
    process (the readiness probe asks for it on every call)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


class WriterQueue:
    """Where the writers of one SQLite file wait their turn: a thread lock in a process, an
    exclusive ``flock`` across processes (where the platform has it).

    A writer takes its turn once it holds a connection, just before ``BEGIN IMMEDIATE``,
    and gives it back once its transaction has ended: a writer waiting for its turn never
    keeps the one holding it from getting a connection.
    """

    def __init__(self, database_path: str | None) -> None:
        self._path = f"{database_path}-writers.lock" if database_path else None
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._pid: int | None = None
        self._fd: int | None = None

    def _file(self) -> int | None:
        if self._path is None or _fcntl is None:
            return None
        if self._pid != os.getpid():
            # After a fork the descriptor is shared with the parent: open one of our own.
            self._pid, self._fd = os.getpid(), os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def acquire(self) -> None:
        """Wait for this thread's turn (at once if it has it already)."""
        if self._owner == threading.get_ident():
            return
        self._lock.acquire()
        try:
            fd = self._file()
            if fd is not None:
                _fcntl.flock(fd, _fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        self._owner = threading.get_ident()

    def release(self) -> None:
        """End this thread's turn, if it has one."""
        if self._owner != threading.get_ident():
            return
        self._owner = None
        if self._fd is not None and self._pid == os.getpid():
            _fcntl.flock(self._fd, _fcntl.LOCK_UN)
        self._lock.release()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the turn for a block (released at its end unless it was held before)."""
        held = self._owner == threading.get_ident()
        self.acquire()
        try:
            yield
        finally:
            if not held:
                self.release()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None


try:
    import fcntl as _fcntl
except ImportError:  # no flock: threads still queue, processes poll as SQLite does
    _fcntl = None  # type: ignore[assignment]


# PostgreSQL writers hold this advisory lock, shared, from the moment they take their write
# time until their transaction ends; nothing takes it exclusively. A history read finds the
# writers still open in pg_locks (the two-key form is listed with objsubid 2). The second
# key is the schema's, so that services in other schemas of the database do not count.
_WRITERS_CLASS = 0x49505443
_SCHEMA_KEY = "(hashtext(current_schema()) & 2147483647)"
_PG_WRITE_TIME = text(
    "WITH held AS MATERIALIZED "
    f"(SELECT pg_advisory_xact_lock_shared({_WRITERS_CLASS}, {_SCHEMA_KEY})) "
    "SELECT clock_timestamp() FROM held"
)
# The horizon: when this statement started, or earlier if a writer holding the lock started
# its transaction earlier (its write time came after its start). A writer whose start this
# role may not see counts as started at the epoch, which holds the horizon back safely.
_PG_HORIZON = text(
    "SELECT least(statement_timestamp(), "
    "min(coalesce(a.xact_start, timestamptz '1970-01-01T00:00:00Z'))) "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    f"WHERE l.locktype = 'advisory' AND l.classid = {_WRITERS_CLASS} "
    f"AND l.objid::bigint = {_SCHEMA_KEY} AND l.objsubid = 2 AND l.granted "
    "AND l.pid <> pg_backend_pid() "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_WRITE_TIME = "ipt_write_time"


def transaction_time(session: Session) -> datetime:
    """The write time of the session's transaction: when every version it publishes was
    written, the same for all of them.

    It is taken once the transaction may write. On SQLite that is once the writer has its
    turn, so write times follow the order of commits. On PostgreSQL it is the database's
    clock (the same for every server), read after the transaction takes the writers'
    advisory lock, which it holds until it ends; :meth:`Database.history_horizon` looks
    for open writers there.
    """
    transaction = session.get_transaction()
    known = session.info.get(_WRITE_TIME)
    if known is not None and known[0] is transaction:
        return known[1]
    connection = session.connection()  # a SQLite writer has its turn from here
    if connection.dialect.name == "postgresql":
        when = to_millisecond(connection.execute(_PG_WRITE_TIME).scalar_one())
    else:
        when = utcnow()
    session.info[_WRITE_TIME] = (transaction, when)
    return when


_Convert = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Prepared:
    """A SELECT compiled for one dialect: its SQL, parameters and result conversions."""

    sql: str
    # Parameter names in the order a positional driver (SQLite's ?) takes them; None when
    # the driver takes them by name (psycopg's %(name)s).
    positions: tuple[str, ...] | None
    binds: Mapping[str, _Convert]
    results: tuple[_Convert, ...]

    def arguments(self, params: Mapping[str, Any]) -> Any:
        values = {
            name: convert(params[name]) if convert else params[name]
            for name, convert in self.binds.items()
        }
        return tuple(values[name] for name in self.positions) if self.positions else values

    def row(self, found: Any) -> tuple[Any, ...]:
        return tuple(
            convert(value) if convert else value
            for value, convert in zip(found, self.results, strict=True)
        )


@functools.lru_cache(maxsize=64)
def _prepare(statement: Select[Any], dialect: Dialect) -> _Prepared:
    compiled = statement.compile(dialect=dialect)
    binds: dict[str, _Convert] = {
        name: bind.type.dialect_impl(dialect).bind_processor(dialect)
        for name, bind in compiled.binds.items()
    }
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    )
    positions = tuple(compiled.positiontup or ()) if dialect.positional else None
    return _Prepared(str(compiled), positions, binds, results)


def fetch_first(
    connection: Connection, statement: Select[Any], params: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The first row of a one-row SELECT (bound by name), run on the driver's cursor.

    For the reads every request makes (the token's client, the resource read) SQLAlchemy's
    work per execution costs several times the query itself; here the statement is
    compiled once and its values are converted by the columns' types as SQLAlchemy does.
    Statement events do not see it. A driver error is raised as SQLAlchemy's, and a
    connection found lost is invalidated.
    """
    prepared = _prepare(statement, connection.dialect)
    found = run_on_driver(connection, prepared.sql, prepared.arguments(params), first=True)
    return prepared.row(found) if found is not None else None


def run_on_driver(connection: Connection, sql: str, arguments: Any, *, first: bool | None) -> Any:
    """Run compiled SQL on the driver's cursor: its first row (or None) when ``first``,
    every row, as the driver returns them, when it is False, and nothing (a statement that
    returns no rows) when it is None.

    A driver error is raised as SQLAlchemy's (without its parameters), and a connection
    found lost is invalidated.
    """
    dialect = connection.dialect
    driver = connection.connection.dbapi_connection
    try:
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, arguments)
            if first is None:
                return None
            return cursor.fetchone() if first else cursor.fetchall()
        finally:
            cursor.close()
    except dialect.loaded_dbapi.Error as error:
        if dialect.is_disconnect(error, driver, None):
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql,
            arguments,
            error,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            dialect=dialect,
        ) from error


@functools.lru_cache(maxsize=32)
def _multi_row_insert(
    table: Table, rows: int, dialect: Dialect
) -> tuple[str, tuple[tuple[str, _Convert], ...]]:
    """``INSERT INTO table (every column) VALUES (...), (...)`` for this many rows, with
    positional parameters, and each column's name and conversion of its values."""
    preparer = dialect.identifier_preparer
    names = ", ".join(preparer.quote(column.name) for column in table.columns)
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    one = "(" + ", ".join([mark] * len(table.columns)) + ")"
    sql = f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES " + ", ".join([one] * rows)
    columns = tuple(
        (column.name, column.type.dialect_impl(dialect).bind_processor(dialect))
        for column in table.columns
    )
    return sql, columns


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows with one statement on the driver's cursor; a column a row leaves out is
    NULL (column defaults are not applied).

    For many small rows at once: one statement for all of them, where a driver running an
    ``executemany`` per row (SQLite's) gives up Python's interpreter lock around each and
    waits to take it back while request threads are busy. Keep ``len(rows)`` within the
    driver's limit on parameters (SQLite: 32,766).
    """
    if not rows:
        return
    sql, columns = _multi_row_insert(table, len(rows), connection.dialect)
    run_on_driver(connection, sql, _arguments(rows, columns), first=None)


# Connections a process inherited from its parent: kept from the garbage collector.
_INHERITED: list[Any] = []


class Appender:
    """Appends rows to one table on a connection of its own per process: each call one
    transaction, on disk when it returns (SQLite ``synchronous=FULL``, PostgreSQL
    ``synchronous_commit``).

    For records that many requests add, each waiting for its own (the audit trail): a call
    costs one statement and its commit, without a session, the pool or, on PostgreSQL,
    more than one round trip. Calls are not thread-safe: one caller at a time.
    """

    # Rows per statement: a table of 16 columns stays far below any driver's limit.
    ROWS_PER_STATEMENT = 50

    def __init__(self, database: Database, table: Table) -> None:
        self.database = database
        self.table = table
        self._connection: Any = None
        self._proxy: Any = None
        self._pid: int | None = None

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Commit ``rows``; a connection found lost is replaced and the rows tried once more
        (a restarted or failed-over server)."""
        try:
            self._append(rows)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            self._append(rows)

    def _driver(self) -> Any:
        if self._pid != os.getpid():
            # A connection opened before a fork belongs to the parent: never used, nor
            # closed (closing sends the server a goodbye on the parent's socket), here.
            if self._proxy is not None:
                _INHERITED.append(self._proxy)
            self._connection, self._proxy, self._pid = None, None, os.getpid()
        if self._connection is None:
            proxy = self.database.engine.raw_connection()
            driver = proxy.driver_connection
            proxy.detach()  # its own for good: not the pool's
            self._proxy = proxy
            if not self.database.is_sqlite:
                # One statement, one transaction, one round trip.
                driver.autocommit = True  # type: ignore[union-attr]
            self._connection = driver
        return self._connection

    def _append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        dialect = self.database.engine.dialect
        driver = self._driver()
        chunks = [
            rows[start : start + self.ROWS_PER_STATEMENT]
            for start in range(0, len(rows), self.ROWS_PER_STATEMENT)
        ]
        writers = self.database._writers
        if writers is not None:
            writers.acquire()  # the SQLite writers' turn (see WriterQueue)
        try:
            cursor = driver.cursor()
            try:
                if len(chunks) > 1:
                    cursor.execute("BEGIN IMMEDIATE" if self.database.is_sqlite else "BEGIN")
                for chunk in chunks:
                    sql, columns = _multi_row_insert(self.table, len(chunk), dialect)
                    cursor.execute(sql, _arguments(chunk, columns))
                if len(chunks) > 1:
                    cursor.execute("COMMIT")
            except BaseException:
                if len(chunks) > 1:
                    self._roll_back(cursor)
                raise
            finally:
                cursor.close()
        except dialect.loaded_dbapi.Error as error:
            lost = dialect.is_disconnect(error, driver, None)
            if lost:
                self._close()
            wrapped = DBAPIError.instance(
                "INSERT INTO " + self.table.name,
                None,
                error,
                dialect.loaded_dbapi.Error,
                hide_parameters=True,
                connection_invalidated=lost,
                dialect=dialect,
            )
            raise wrapped from error
        finally:
            if writers is not None:
                writers.release()

    def _roll_back(self, cursor: Any) -> None:
        try:
            cursor.execute("ROLLBACK")
        except Exception:
            self._close()  # in an unknown state: a new connection next time

    def _close(self) -> None:
        connection, self._connection, self._proxy = self._connection, None, None
        try:
            connection.close()
        except Exception:
            return


def _arguments(
    rows: Sequence[Mapping[str, Any]], columns: tuple[tuple[str, _Convert], ...]
) -> list[Any]:
    arguments = []
    for row in rows:
        for name, convert in columns:
            value = row.get(name)
            arguments.append(convert(value) if convert is not None and value is not None else value)
    return arguments


@dataclass
class _Pending:
    """The changes of an open transaction, for its observers."""

    edits: dict[str, Any] = field(default_factory=dict)
    attachments: dict[str, dict[tuple[str, str], Any]] = field(default_factory=dict)


class Database:
    """One database: its engine, its sessions and its schema version."""

    def __init__(self, url: str = DEFAULT_DATABASE_URL, *, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        # Parameters stay out of error messages: they can hold patient data.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if not self.is_sqlite:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
        self.engine = create_engine(self.url, **kwargs)
        self._writers: WriterQueue | None = None
        if self.is_sqlite:
            path = self.url.database
            self._writers = WriterQueue(path if path not in (None, "", ":memory:") else None)
            _configure_sqlite(self.engine, self._writers)
        else:
            _configure_postgresql(self.engine)
        self._shared: ContextVar[Session | None] = ContextVar(f"shared-{id(self)}", default=None)
        self._pending: ContextVar[_Pending | None] = ContextVar(f"pending-{id(self)}", default=None)
        # Called with every completed change to a plan, inside its transaction.
        self.observers: list[Any] = []
        # Called before a write transaction takes a connection: a caller holding one for
        # its reads gives it back, so that a writer never holds two (with more writers
        # than pooled connections, writers holding one each and waiting for a second would
        # wait for each other until the pool's timeout).
        self.before_writes: list[Callable[[], None]] = []
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False
        )
        # SQLite's connections already run without implicit transactions (see above).
        single = {_SINGLE_OPTION: True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"}
        self._single = self.engine.execution_options(**single)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def supports_row_locks(self) -> bool:
        return not self.is_sqlite

    def release_cache_on_return(self, connection: Connection) -> None:
        """Have ``connection`` give back its SQLite page cache (up to 2 MiB) once it returns
        to the pool: for one that has read or written much data nothing will read again
        soon (a bulk export's resources and files). Otherwise every pooled connection
        such data passes through keeps a full cache of it for as long as the process
        lives. Nothing to do on PostgreSQL, whose connections cache nothing in the
        process."""
        if self.is_sqlite:
            connection.info[_RELEASE_CACHE] = True

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads; its objects stay usable after it closes.

        Inside :meth:`transaction` it is the transaction's session, so reads see its writes.
        """
        shared = self._shared.get()
        if shared is not None:
            yield shared
            return
        with self._reader() as session:
            yield session

    def single_statement_connection(self) -> Connection:
        """An open connection whose statements each stand alone, outside any transaction;
        the caller closes it.

        A single SELECT is consistent on its own, so no BEGIN/ROLLBACK round trips are
        spent on it: for the reads every request makes (the token's client, a resource).
        """
        return self._single.connect()

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction, committed on success and rolled back on any error.

        Inside :meth:`transaction` it joins that transaction instead.
        """
        shared = self._shared.get()
        if shared is not None:
            yield shared
            return
        self._before_write()
        with self._writer() as session, self._turn_ends(), session.begin():
            yield session

    def _before_write(self) -> None:
        for hook in self.before_writes:
            hook()

    @contextmanager
    def _turn_ends(self) -> Iterator[None]:
        """Give the SQLite writer's turn back once the transaction inside has ended."""
        try:
            yield
        finally:
            if self._writers is not None:
                self._writers.release()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction for several writes: all of them are committed, or none.

        Observers hear of each changed plan once, at the end, with every attachment.
        """
        shared = self._shared.get()
        if shared is not None:
            # Already inside one: join it, and publish with it at its end.
            yield shared
            return
        self._before_write()
        with self._writer() as session, self._turn_ends(), session.begin():
            pending = _Pending()
            tokens = self._shared.set(session), self._pending.set(pending)
            try:
                yield session
                self.publish_pending()
            finally:
                self._shared.reset(tokens[0])
                self._pending.reset(tokens[1])

    def publish_pending(self) -> None:
        """Tell the observers now of the open transaction's changes so far, so that its
        later reads see them published (a transaction Bundle's GET entries, which FHIR runs
        after its writes). They are not told again at its end; a change after this call is.
        """
        pending = self._pending.get()
        session = self._shared.get()
        if pending is None or session is None:
            return
        edits = list(pending.edits.values())
        for edit in edits:
            edit.attachments = pending.attachments.get(edit.plan.id, {})
            self._run_observers(edit)
        pending.edits.clear()
        pending.attachments.clear()
        session.flush()

    def attach(self, plan_id: str, key: tuple[str, str], value: Any) -> None:
        """Hand ``value`` to the observers of the open transaction's change to a plan."""
        pending = self._pending.get()
        if pending is None:
            raise RuntimeError("attachments are handed over inside a transaction")
        pending.attachments.setdefault(plan_id, {})[key] = value

    def notify(self, edit: Any) -> None:
        """A change to a plan is complete: tell the observers (at the end of a transaction)."""
        pending = self._pending.get()
        if pending is not None:
            # Several edits of one plan in a transaction: the last one speaks for all.
            earlier = pending.edits.get(edit.plan.id)
            if earlier is not None:
                edit.follow(earlier)
            pending.edits[edit.plan.id] = edit
        else:
            self._run_observers(edit)

    def _run_observers(self, edit: Any) -> None:
        for observer in self.observers:
            observer(edit)

    def history_horizon(self) -> datetime:
        """An instant before which every write has committed: a write not yet visible to a
        read that starts after this call is stamped at or after it (see
        :func:`transaction_time`).

        SQLite: taken in the writers' turn, so it waits for the write in progress, if any.
        PostgreSQL: now, or the start of the oldest transaction still holding the writers'
        lock; it waits for nobody.
        """
        if self._writers is not None:
            with self._writers.turn():
                return utcnow()
        with self._single.connect() as connection:
            horizon: datetime = connection.execute(_PG_HORIZON).scalar_one()
        return to_millisecond(horizon)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writers is not None:
            self._writers.close()

    # --- migrations -----------------------------------------------------------------

    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option(
            "sqlalchemy.url", self.url.render_as_string(hide_password=False).replace("%", "%%")
        )
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema up to ``revision`` (the newest by default)."""
        with self.engine.begin() as connection:
            config = self._alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def downgrade(self, revision: str) -> None:
        with self.engine.begin() as connection:
            config = self._alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, revision)

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        return _head_revision()

    def schema_is_current(self) -> bool:
        return self.current_revision() == self.head_revision()
