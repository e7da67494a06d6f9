"""Secondary indexes of the filesystem backend, in SQLite beside the files.

``<path>/index.sqlite3`` (WAL, a busy timeout) holds, per index bucket, each row's expiry
and entries, a table per kind of entry (equality, numeric, string) and the holders of unique
values. An `IndexedWrite` runs under the row's stripe lock (as every write of the file) and
inside one ``BEGIN IMMEDIATE`` transaction: the unique check and claim, the new entries and
the file's rename all happen before the commit, so processes sharing the store see the index
change with the row, and two processes claiming one unique value are serialized by SQLite.
A crash between the rename and the commit leaves the row's old entries: a query can then
miss the row under its new value, but never return a wrong row, since every row read is
checked against the whole condition again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .._commands import IndexedWrite, IndexRead
from .._exceptions import BackendError, IntegrityError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (bucket TEXT, key TEXT, expires REAL, terms TEXT,
    PRIMARY KEY (bucket, key));
CREATE INDEX IF NOT EXISTS rows_exp ON rows (bucket, expires);
CREATE TABLE IF NOT EXISTS eq (bucket TEXT, field TEXT, value TEXT, key TEXT);
CREATE INDEX IF NOT EXISTS eq_value ON eq (bucket, field, value);
CREATE INDEX IF NOT EXISTS eq_key ON eq (bucket, key);
CREATE TABLE IF NOT EXISTS num (bucket TEXT, field TEXT, value REAL, key TEXT);
CREATE INDEX IF NOT EXISTS num_value ON num (bucket, field, value, key);
CREATE INDEX IF NOT EXISTS num_key ON num (bucket, key);
CREATE TABLE IF NOT EXISTS lex (bucket TEXT, field TEXT, value TEXT, key TEXT);
CREATE INDEX IF NOT EXISTS lex_value ON lex (bucket, field, value, key);
CREATE INDEX IF NOT EXISTS lex_key ON lex (bucket, key);
CREATE TABLE IF NOT EXISTS uniq (bucket TEXT, u TEXT, key TEXT, PRIMARY KEY (bucket, u));
"""
_TABLE = {"eq": "eq", "num": "num", "lex": "lex"}
_SWEEP = 8


class FsIndexes:
    """The index database of one filesystem store (one connection per worker thread)."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.file = os.path.join(path, "index.sqlite3")
        self.timeout = 3600.0 if timeout is None else max(timeout, 0.001)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []

    def db(self) -> sqlite3.Connection:
        """This worker thread's connection (each is used by its own thread only)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            os.makedirs(os.path.dirname(self.file), exist_ok=True)
            conn = sqlite3.connect(
                self.file, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection (the backend is closing: no batch is running)."""
        with self._lock:
            conns, self._open = self._open, []
        self._local = threading.local()
        for conn in conns:
            conn.close()

    @staticmethod
    def _drop(db: sqlite3.Connection, bucket: str, key: str) -> None:
        for table in ("eq", "num", "lex"):
            db.execute(f"DELETE FROM {table} WHERE bucket = ? AND key = ?", (bucket, key))
        db.execute("DELETE FROM uniq WHERE bucket = ? AND key = ?", (bucket, key))
        db.execute("DELETE FROM rows WHERE bucket = ? AND key = ?", (bucket, key))

    def write(self, *args: Any) -> Any:
        """`_write`, a database error in the slot."""
        try:
            return self._write(*args)
        except sqlite3.Error as exc:
            err = BackendError(f"index database {self.file}: {exc}")
            err.__cause__ = exc
            return err

    def read(self, cmd: IndexRead, prefix: str, now: float) -> Any:
        try:
            return self._read(cmd, prefix, now)
        except sqlite3.Error as exc:
            err = BackendError(f"index database {self.file}: {exc}")
            err.__cause__ = exc
            return err

    def _write(
        self,
        cmd: IndexedWrite,
        bucket: str,
        now: float,
        apply: Callable[[], tuple[Any, Any, bool]],
        store: Callable[[Any], None],
    ) -> Any:
        """Run ``cmd`` (its row's stripe lock held): ``apply()`` gives the plain command's
        result and the new entry (None: delete, or unchanged), ``store(new)`` writes it."""
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            stale = db.execute(
                "SELECT key FROM rows WHERE bucket = ? AND expires > 0 AND expires <= ? LIMIT ?",
                (bucket, now, _SWEEP),
            ).fetchall()
            for (k,) in stale:
                self._drop(db, bucket, k)
            result, new, changed = apply()
            if cmd.mode == "touch":
                if changed:
                    db.execute(
                        "UPDATE rows SET expires = ? WHERE bucket = ? AND key = ?",
                        (new.expires, bucket, cmd.key),
                    )
                    store(new)
                db.execute("COMMIT")
                return result
            if not changed:
                if cmd.mode == "delete":
                    self._drop(db, bucket, cmd.key)
                db.execute("COMMIT")
                return result
            if new is not None:
                for u in cmd.unique:
                    row = db.execute(
                        "SELECT u.key FROM uniq u JOIN rows r ON r.bucket = u.bucket AND "
                        "r.key = u.key WHERE u.bucket = ? AND u.u = ? AND u.key != ? AND "
                        "(r.expires = 0 OR r.expires > ?)",
                        (bucket, u, cmd.key, now),
                    ).fetchone()
                    if row is not None:
                        db.execute("ROLLBACK")
                        err = IntegrityError(f"unique value taken by {row[0]!r}")
                        err.unique = u  # type: ignore[attr-defined]
                        return err
            self._drop(db, bucket, cmd.key)
            if new is not None:
                expires = new.expires
                db.execute(
                    "INSERT INTO rows VALUES (?, ?, ?, ?)",
                    (bucket, cmd.key, expires, json.dumps([list(t) for t in cmd.terms])),
                )
                for t in cmd.terms:
                    value = t.value
                    db.execute(
                        f"INSERT INTO {_TABLE[t.kind]} VALUES (?, ?, ?, ?)",
                        (bucket, t.field, value, cmd.key),
                    )
                for u in cmd.unique:
                    db.execute("INSERT OR REPLACE INTO uniq VALUES (?, ?, ?)", (bucket, u, cmd.key))
            store(new)
            db.execute("COMMIT")
            return result
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _read(self, cmd: IndexRead, prefix: str, now: float) -> Any:
        db = self.db()
        bucket = cmd.key
        live = "(r.expires = 0 OR r.expires > ?)"
        cut = len(prefix)
        if cmd.op == "eq":
            marks = ",".join("?" * len(cmd.values))
            sql = (
                f"FROM eq e JOIN rows r ON r.bucket = e.bucket AND r.key = e.key WHERE "
                f"e.bucket = ? AND e.field = ? AND e.value IN ({marks}) AND {live}"
            )
            args: list[Any] = [bucket, cmd.field, *cmd.values, now]
            if cmd.count_only:
                return db.execute("SELECT count(*) " + sql, args).fetchone()[0]
            return [(k[cut:], None) for (k,) in db.execute("SELECT e.key " + sql, args)]
        kind = "lex" if cmd.op == "prefix" else cmd.kind
        table = _TABLE[kind]
        where = ["x.bucket = ?", "x.field = ?", live]
        args = [bucket, cmd.field, now]
        if cmd.op == "prefix":
            p = cmd.values[0]
            where.append("x.value >= ?")
            args.append(p)
            end = _after_prefix(p)
            if end is not None:
                where.append("x.value < ?")
                args.append(end)
        else:
            if cmd.lo is not None:
                where.append("x.value > ?" if cmd.lo_open else "x.value >= ?")
                args.append(cmd.lo)
            if cmd.hi is not None:
                where.append("x.value < ?" if cmd.hi_open else "x.value <= ?")
                args.append(cmd.hi)
        sql = (
            f"FROM {table} x JOIN rows r ON r.bucket = x.bucket AND r.key = x.key "
            f"WHERE {' AND '.join(where)}"
        )
        if cmd.count_only:
            inner = f"SELECT 1 {sql} LIMIT -1 OFFSET ?"
            if cmd.limit is not None:
                inner = f"SELECT 1 {sql} LIMIT ? OFFSET ?"
                args += [cmd.limit]
            args += [cmd.offset]
            return db.execute(f"SELECT count(*) FROM ({inner})", args).fetchone()[0]
        order = "DESC" if cmd.desc else "ASC"
        sql = (
            f"SELECT x.key, x.value {sql} ORDER BY x.value {order}, x.key {order} LIMIT ? OFFSET ?"
        )
        args += [-1 if cmd.limit is None else cmd.limit, cmd.offset]
        return [(k[cut:], v) for k, v in db.execute(sql, args)]

    def clear(self, prefix: str) -> None:
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("rows", "eq", "num", "lex", "uniq"):
                if prefix:
                    db.execute(
                        f"DELETE FROM {table} WHERE substr(bucket, 1, ?) = ?",
                        (len(prefix), prefix),
                    )
                else:
                    db.execute(f"DELETE FROM {table}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _after_prefix(p: str) -> str | None:
    """The least string above every string starting with ``p`` (None: there is none), so
    that a prefix is one range of the values' binary order: SQLite compares text as UTF-8
    bytes, which is Python's order of the strings, and NUL in a value is a byte like any
    other (text functions such as substr stop at it)."""
    p = p.rstrip("\U0010ffff")
    if not p:
        return None
    last = ord(p[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # no surrogates in stored text: the next scalar value
        last = 0xE000
    return p[:-1] + chr(last)
