"""What each transaction holds, and the rule that none stays open across network I/O.

Two jobs, both driven by the engine's connection events (`track`):

- **SQLite takes its write lock only to write.** A transaction begins `DEFERRED`, so reads
  take no lock and never wait behind writers (WAL lets readers and the one writer run
  together). The first statement that writes (INSERT/UPDATE/DELETE, DDL, a SAVEPOINT, or a
  `SELECT ... FOR UPDATE`, whose clause SQLite does not render) first ends the read snapshot
  and begins again `IMMEDIATE`, waiting its turn for the lock under the busy timeout. Upgrading
  in place instead would fail at once with SQLITE_BUSY whenever another connection committed
  since the snapshot was taken. The reads before the first write therefore see the database
  as of their own start, as each statement does under PostgreSQL's READ COMMITTED: code that
  reads, decides and writes must lock (`with_for_update`) or rely on a constraint on both
  backends alike.
- **Which asyncio task holds which transaction**, read or write, so that `guard` can refuse
  a Temporal call (or any other network call) made while the caller holds one: an open write
  transaction holds SQLite's only write lock (everyone else waits), and any open transaction
  holds a pooled connection (PostgreSQL: "idle in transaction") for as long as the network
  call takes.

The guard's mode is process-wide (`configure`): `raise` in the tests, `warn` (a log line with
the caller) by default, `off` to silence it.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import weakref
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("idp.db")

GuardMode = Literal["off", "warn", "raise"]
_OWNER = "idp_txn_owner"  # conn.info key: a weak reference to the task that began it
_STATE = "idp_txn_state"  # conn.info key: "read" or "write" while a transaction is open
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "SAVEPOINT")


class TransactionHeld(RuntimeError):
    """A network call was made while the calling task held a database transaction."""


@dataclass
class _Held:
    read: int = 0
    write: int = 0


_held: weakref.WeakKeyDictionary[asyncio.Task[Any], _Held] = weakref.WeakKeyDictionary()
_mode: GuardMode = "warn"


def configure(mode: GuardMode) -> None:
    """Set what `guard` does for this process (settings: IDP_TRANSACTION_GUARD)."""
    global _mode
    _mode = mode


def _task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a synchronous caller (migrations, scripts)
        return None


def held() -> Literal["write", "read"] | None:
    """The strongest transaction the current task holds open, if any."""
    task = _task()
    entry = _held.get(task) if task is not None else None
    if entry is None:
        return None
    if entry.write:
        return "write"
    return "read" if entry.read else None


def guard(doing: str) -> None:
    """Call before network I/O: with a transaction open in this task, warn or raise."""
    if _mode == "off":
        return
    kind = held()
    if kind is None:
        return
    message = (
        f"{doing} while holding an open {kind} transaction: commit (or end the read) "
        "before calling out, so the database lock and connection are not held meanwhile"
    )
    if _mode == "raise":
        raise TransactionHeld(message)
    caller = traceback.extract_stack(limit=8)[:-1]
    where = next(
        (f"{f.filename}:{f.lineno}" for f in reversed(caller) if "/core/db/" not in f.filename),
        "?",
    )
    log.warning("%s (at %s)", message, where)


def _is_write(statement: str, context: Any) -> bool:
    if context is not None and (context.isinsert or context.isupdate or context.isdelete):
        return True
    compiled = getattr(context, "compiled", None)
    if getattr(getattr(compiled, "statement", None), "_for_update_arg", None) is not None:
        return True
    return statement.lstrip().upper().startswith(_WRITES)


def _begun(conn: Connection) -> None:
    _forget(conn.info)
    conn.info[_STATE] = "read"
    task = _task()
    if task is None:
        conn.info.pop(_OWNER, None)
        return
    conn.info[_OWNER] = weakref.ref(task)
    _held.setdefault(task, _Held()).read += 1


def _owner(info: dict[Any, Any]) -> _Held | None:
    ref = info.get(_OWNER)
    task = ref() if ref is not None else None
    return _held.get(task) if task is not None else None


def _forget(info: dict[Any, Any]) -> None:
    state = info.pop(_STATE, None)
    entry = _owner(info)
    info.pop(_OWNER, None)
    if entry is None or state is None:
        return
    if state == "write":
        entry.write = max(0, entry.write - 1)
    else:
        entry.read = max(0, entry.read - 1)


def _ended(conn: Connection) -> None:
    _forget(conn.info)


# A connection reset, invalidated or closed by the pool ends its transaction without a
# commit or rollback event.
def _reset(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
    _forget(connection_record.info)


def _invalidated(dbapi_connection: Any, connection_record: Any, exception: Any) -> None:
    _forget(connection_record.info)


def _closed(dbapi_connection: Any, connection_record: Any) -> None:
    _forget(connection_record.info)


def _writing(conn: Connection) -> None:
    conn.info[_STATE] = "write"
    entry = _owner(conn.info)
    if entry is not None:
        entry.read = max(0, entry.read - 1)
        entry.write += 1


def _sqlite_begin(conn: Connection) -> None:
    # SQLAlchemy, not the driver, opens transactions (the driver is in autocommit mode, see
    # engine._sqlite_connect), so SAVEPOINTs work; DEFERRED so that reads take no lock.
    conn.exec_driver_sql("BEGIN")
    _begun(conn)


def _sqlite_before_execute(
    conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
) -> None:
    if conn.info.get(_STATE) != "read" or not _is_write(statement, context):
        return
    # End the read snapshot and wait for the write lock (busy timeout), see the module text.
    cursor.execute("COMMIT")
    cursor.execute("BEGIN IMMEDIATE")
    _writing(conn)


def _before_execute(
    conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
) -> None:
    if conn.info.get(_STATE) == "read" and _is_write(statement, context):
        _writing(conn)


def track(engine: Engine, *, sqlite: bool) -> None:
    """Install the begin/upgrade/end bookkeeping (and SQLite's deferred begin) on `engine`."""
    if sqlite:
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _sqlite_before_execute)
    else:
        event.listen(engine, "begin", _begun)
        event.listen(engine, "before_cursor_execute", _before_execute)
    event.listen(engine, "commit", _ended)
    event.listen(engine, "rollback", _ended)
    event.listen(engine.pool, "reset", _reset)
    event.listen(engine.pool, "invalidate", _invalidated)
    event.listen(engine.pool, "close", _closed)
