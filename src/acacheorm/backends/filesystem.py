"""FileSystemBackend: one file per key in a sharded directory tree, safe across processes.

Layout under ``path`` (everything this backend creates; nothing else there is touched)::

    <path>/locks/00.lock … ff.lock            256 lock files shared by every namespace
    <path>/ns-<32 hex>/<aa>/<64 hex>          one file per key
    <path>/.trash-<16 hex>/                   a cleared namespace while it is deleted

The file name is the sha256 of the full (namespace-prefixed) key and ``aa`` its first byte;
the namespace directory is a truncated sha256 of the namespace. No key or namespace can name a
path outside the tree, two keys never share a file, and case-insensitive filesystems are safe
(names are lower-case hex). One level of 256 shards keeps directories small enough for any
modern filesystem (ext4/XFS index large directories) while creating at most 256 directories
per namespace: a second level would cost a ``mkdir`` for almost every new key of a small store
and up to 65,536 directories per namespace.

File format, version 1 (little-endian)::

    offset size
         0    4  magic b"ACFS"
         4    1  format version (1)
         5    1  flags (0)
         6    2  reserved (0)
         8    8  expiry: absolute unix time as a float64, 0.0 for "never"
        16    8  token: random 64-bit version, new on every write of the value
        24    4  key length in bytes (UTF-8, surrogates passed through)
        28    8  value length in bytes
        36    4  CRC-32 of bytes 0..36, the key and the value
        40       key, then value

A file whose size, magic, version, key or checksum does not match is *unreadable*: every
operation treats it exactly like an absent key (a cache miss), and it is removed (with a
warning on the ``acacheorm.backends.filesystem`` logger) when seen. Expired files are
likewise absent to every operation and removed when seen, by `FileSystemBackend.cull` and by
`Backend.clear`.

Writes go to ``.<digest>.<random>.tmp`` in the target directory, are fsynced when
``fsync=True``, then renamed over the target (``os.replace``), so a reader sees the old file or
the new one, never a torn one. A crash leaves at worst a stray temporary file, which readers
never open and `cull` / `clear` remove.

Locking: stripe ``aa`` (the first byte of the digest, which is also the shard directory) is
guarded by ``flock`` on ``locks/aa.lock``; readers take it shared, writers
exclusive, around their read-check-write. Each worker call opens its own descriptors, so
threads of one process exclude each other as well as other processes (``flock`` locks belong
to the open file description). An atomic batch takes every stripe it needs in sorted order and
holds them for the whole batch; clear takes all 256. Local filesystems only: over NFS ``flock``
is emulated with per-process POSIX locks and threads would not exclude each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio.to_thread

from .._commands import (
    KEEP_TTL,
    READ_COMMANDS,
    Add,
    Batch,
    Capabilities,
    Cas,
    Command,
    Delete,
    IndexedWrite,
    IndexRead,
    Replace,
    Set,
    Touch,
)
from .._exceptions import AtomicityError, BackendUnavailable
from ._fsfiles import (
    _FILE_MODE,
    _O_CLOEXEC,
    FORMAT_VERSION,
    _Corrupt,
    _decode,
    _discard,
    _encode,
    _fsync_dir,
    _header_says_remove,
    _key_of_file,
    _os_error,
    _read_file,
    _rmdir_if_empty,
    _rmtree,
    _unlink,
)
from ._fsindex import FsIndexes
from ._semantics import UNCHANGED, Entry, Semantics
from .base import DEFAULT_TIMEOUT, Backend, check_scan_args

if TYPE_CHECKING:
    from .near import NearCache

__all__ = ["FORMAT_VERSION", "FileSystemBackend"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_STRIPES: Final = tuple(f"{i:02x}" for i in range(256))
_SHARD_NAME: Final = re.compile(r"[0-9a-f]{2}")
_DATA_NAME: Final = re.compile(r"[0-9a-f]{64}")
_TEMP_NAME: Final = re.compile(r"\.([0-9a-f]{64})\.[0-9a-f]{12}\.tmp")
_NS_NAME: Final = re.compile(r"ns-[0-9a-f]{32}")
_TRASH_PREFIX: Final = ".trash-"
# Lock polling when a timeout is set: start short (locks are held for microseconds to a few
# fsyncs), back off to a cap so a waiter neither spins nor oversleeps a released lock.
_POLL_FIRST: Final = 0.0001
_POLL_MAX: Final = 0.005


class _Location(NamedTuple):
    key: str
    key_bytes: bytes
    digest: str
    directory: str
    file: str


# -- small pure helpers (module level so tests can observe or replace them) --------------


def _now() -> float:
    return time.time()


def _new_token() -> int:
    # os.urandom, not `random`: two processes must never draw the same sequence.
    return int.from_bytes(os.urandom(8), "little")


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def _namespace_dirname(namespace: str) -> str:
    return "ns-" + hashlib.sha256(_key_bytes(namespace)).hexdigest()[:32]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_temp(directory: str, digest: str, data: bytes, fsync: bool) -> str:
    """Write ``data`` to a new temporary file next to the target; returns its path."""
    name = os.path.join(directory, f".{digest}.{os.urandom(6).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
    try:
        fd = os.open(name, flags, _FILE_MODE)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(name, flags, _FILE_MODE)
    done = False
    try:
        try:
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        done = True
    finally:
        if not done:
            _discard(name)
    return name


# -- the command semantics (shared with the in-process backend) ------------------------------

# Expiry is an absolute unix time, 0.0 for never (as in the file header).
_SEMANTICS: Final = Semantics(lambda: _new_token(), never=0.0)
_apply = _SEMANTICS.apply


def _plain_write(cmd: IndexedWrite) -> Command:
    """The plain command an indexed write applies to the row's file."""
    mode = cmd.mode
    if mode == "delete":
        return Delete(cmd.key)
    if mode == "touch":
        return Touch(cmd.key, None if cmd.ttl is KEEP_TTL else cmd.ttl)
    if mode == "cas":
        return Cas(cmd.key, cmd.value, cmd.token, cmd.ttl)
    if mode == "replace":
        return Replace(cmd.key, cmd.value, cmd.ttl)
    ttl = None if cmd.ttl is KEEP_TTL else cmd.ttl
    return (Add if mode == "add" else Set)(cmd.key, cmd.value, ttl)


# -- locks ---------------------------------------------------------------------------------


class _Locks:
    """The stripe locks of one worker call; `close` releases everything.

    Descriptors are opened per call, never shared between threads: flock excludes open file
    descriptions, so two threads of this process exclude each other as two processes do.
    """

    def __init__(self, lock_dir: str, timeout: float | None) -> None:
        self._dir = lock_dir
        self._timeout = timeout
        self._fds: dict[str, int] = {}

    def _fd(self, stripe: str) -> int:
        fd = self._fds.get(stripe)
        if fd is None:
            path = os.path.join(self._dir, f"{stripe}.lock")
            flags = os.O_RDWR | os.O_CREAT | _O_CLOEXEC
            try:
                fd = os.open(path, flags, _FILE_MODE)
            except FileNotFoundError:
                os.makedirs(self._dir, exist_ok=True)
                fd = os.open(path, flags, _FILE_MODE)
            self._fds[stripe] = fd
        return fd

    def acquire(self, stripe: str, exclusive: bool) -> None:
        fd = self._fd(stripe)
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if self._timeout is None:
            fcntl.flock(fd, op)
            return
        # A blocking flock cannot be interrupted from another thread, so a timeout means
        # polling; a stuck peer then costs a BackendUnavailable, not a hung worker thread.
        deadline = time.monotonic() + self._timeout
        delay = _POLL_FIRST
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendUnavailable(
                    f"filesystem backend: timed out after {self._timeout}s waiting for "
                    f"{os.path.join(self._dir, stripe + '.lock')}"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                continue

    def release(self, stripe: str) -> None:
        fcntl.flock(self._fds[stripe], fcntl.LOCK_UN)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)  # closing the last descriptor releases its lock


# -- the backend -----------------------------------------------------------------------------


class FileSystemBackend(Backend):
    """A store of one file per key under ``path``, shared safely by processes on one host.

    Every batch runs in one worker thread (never on the event loop). Writes are atomic
    (temporary file + rename); ``fsync=True`` also flushes the file and its directory before
    the call returns, so a written value survives a power loss. ``fsync=False`` skips those two
    fsyncs (much faster on most disks): after a power loss a recent write may be lost or, if
    its data never reached the disk, fail its checksum and read as absent, but is never torn.
    ``add``/``replace``/CAS/``incr``/
    ``touch``/``delete`` are atomic across processes (``flock`` stripe locks); an
    ``atomic=True`` batch holds the locks of all its keys for the whole batch, so no other
    reader or writer sees part of it, and writes nothing if any of its files cannot be
    written. ``timeout`` bounds the wait for a lock held by another process or thread
    (`BackendUnavailable` after it; ``None`` waits forever).

    Files are created with mode 0600: share a store between processes of one user. TTLs are
    wall-clock (absolute unix time in the file), so a clock change moves expiry. Each
    namespace is a directory of its own: unlike Redis, a backend without a namespace does not
    see key ``"k"`` of namespace ``"app"`` as ``"app:k"``, but its `clear` (and `cull`) covers
    every namespace under ``path``. Call `cull` now and then to reclaim the space of expired
    keys nobody reads again.

    Example::

        async with co.FileSystemBackend("/var/cache/myapp", namespace="web") as backend:
            await backend.set("greeting", b"hello", ttl=60)
            assert await backend.get("greeting") == b"hello"
            removed = await backend.cull()
    """

    capabilities = Capabilities(atomic_batch=True, native_cas=True, listable=True, indexes=True)
    url_schemes = ("file",)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FileSystemBackend:
        """Build from ``file:///var/cache/app`` (a local path); keyword arguments as for the
        constructor.

        Example::

            backend = co.FileSystemBackend.from_url("file:///var/cache/app")
        """
        from .._urls import no_leftovers, redact

        parts = urlsplit(url)
        no_leftovers(url, dict(parse_qsl(parts.query, keep_blank_values=True)))
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs name a local path (file:///path), not {redact(url)!r}")
        if not path:
            raise ValueError(f"no path in {redact(url)!r}")
        return cls(path, **options)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "",
        fsync: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        auto_batch: bool = True,
        near_cache: NearCache | None = None,
    ) -> None:
        super().__init__(
            namespace=namespace, timeout=timeout, auto_batch=auto_batch, near_cache=near_cache
        )
        fspath = os.fspath(path)
        if not isinstance(fspath, str) or not fspath:
            raise TypeError(f"path must be a non-empty str or os.PathLike[str]: {path!r}")
        self.path = os.path.abspath(fspath)
        self.fsync = bool(fsync)
        self._lock_dir = os.path.join(self.path, "locks")
        self._ns_dir = os.path.join(self.path, _namespace_dirname(namespace))
        self._fsindex = FsIndexes(self.path, timeout)

    def file_for(self, key: str) -> str:
        """The path of the file that holds ``key`` (whether or not it exists), for debugging.

        Example::

            print(backend.file_for("user:1"))
        """
        return self._locate(self.full_key(key)).file

    def _locate(self, full_key: str) -> _Location:
        key_bytes = _key_bytes(full_key)
        digest = hashlib.sha256(key_bytes).hexdigest()
        directory = os.path.join(self._ns_dir, digest[:2])
        return _Location(full_key, key_bytes, digest, directory, os.path.join(directory, digest))

    async def _in_thread(self, func: Callable[[], _T], action: str) -> _T:
        # A worker thread cannot be stopped. A cancelled caller (a timeout, a task group
        # failing) therefore waits for its thread before the CancelledError goes on: no batch
        # is still running behind an await that has ended.
        work = asyncio.ensure_future(anyio.to_thread.run_sync(func))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            while not work.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait((work,))
            if not work.cancelled():
                work.exception()  # retrieved: the caller is cancelled, the outcome is moot
            raise
        except OSError as exc:  # the workers map what they expect; this is the backstop
            raise _os_error(exc, action) from exc

    async def _execute(self, batch: Batch) -> list[Any]:
        return await self._in_thread(lambda: self._run_batch(batch), "batch")

    async def _clear(self) -> None:
        await self._in_thread(self._clear_sync, "clear")

    async def _near_get(self, keys: list[str]) -> list[tuple[Any, float | None]]:
        return await self._in_thread(lambda: self._near_get_sync(keys), "batch")

    def _near_get_sync(self, keys: list[str]) -> list[tuple[Any, float | None]]:
        """Each key's value and remaining TTL, under its stripe's shared lock."""
        locks = _Locks(self._lock_dir, self.timeout)
        out: list[tuple[Any, float | None]] = []
        try:
            for key in keys:
                loc = self._locate(key)
                stripe = loc.digest[:2]
                locks.acquire(stripe, False)
                try:
                    now = _now()
                    entry = self._load(loc, now)
                except OSError as exc:
                    out.append((_os_error(exc, f"Get {key!r}"), 0.0))
                    continue
                finally:
                    locks.release(stripe)
                if entry is None:
                    out.append((None, 0.0))
                else:
                    out.append((entry.value, entry.expires - now if entry.expires else None))
        finally:
            locks.close()
        return out

    async def _close(self) -> None:
        self._fsindex.close()

    async def cull(self) -> int:
        """Remove expired entries, unreadable files and stray temporary files.

        Returns the number of files removed. Runs one lock stripe at a time, so other
        readers and writers keep going meanwhile. Without a namespace it culls every
        namespace under ``path``.

        Example::

            removed = await backend.cull()
        """
        return await self._in_thread(self._cull_sync, "cull")

    async def scan(self, prefix: str = "", count: int = 500) -> AsyncIterator[str]:
        """Every live key starting with ``prefix`` (without the namespace), shard by shard.

        Each file's key is read from its header in a worker thread, about ``count`` keys
        per step; expired files and files whose header is unreadable are skipped (a file
        whose value fails its checksum is listed, and reads as absent). Only this backend's
        namespace directory is walked: without a namespace, that is the keys stored without
        one, the only ones `get` can read through this backend.

        Example::

            async for key in backend.scan("user:"):
                ...
        """
        check_scan_args(prefix, count)
        start = _key_bytes(self._prefix + prefix)
        cut = len(self._prefix)
        shard = 0
        while shard < len(_STRIPES):
            keys, shard = await self._in_thread(
                functools.partial(self._scan_sync, shard, start, count), "scan"
            )
            for key in keys:
                yield key.decode("utf-8", "surrogatepass")[cut:]

    def __repr__(self) -> str:
        ns = f" namespace={self.namespace!r}" if self.namespace else ""
        return f"<{type(self).__name__} path={self.path!r}{ns}>"

    # -- worker-thread code below: blocking I/O only here ------------------------------------

    def _load(self, loc: _Location, now: float) -> Entry | None:
        """The live entry at ``loc``; expired and unreadable files are removed and absent.

        Callers hold the stripe lock (shared is enough: writers are excluded, so the file
        judged expired or unreadable is the file removed).
        """
        data = _read_file(loc.file)
        if data is None:
            return None
        try:
            entry = _decode(data, loc.key_bytes)
        except _Corrupt as exc:
            logger.warning("removing unreadable cache file %s: %s", loc.file, exc)
            _discard(loc.file)
            return None
        if entry.expires and entry.expires <= now:
            _discard(loc.file)
            return None
        return entry

    def _store(self, loc: _Location, entry: Entry | None) -> None:
        if entry is None:
            if _unlink(loc.file) and self.fsync:
                _fsync_dir(loc.directory)
            return
        tmp = _write_temp(loc.directory, loc.digest, _encode(loc.key_bytes, entry), self.fsync)
        try:
            os.replace(tmp, loc.file)
        except BaseException:
            _discard(tmp)
            raise
        if self.fsync:
            _fsync_dir(loc.directory)

    def _run_batch(self, batch: Batch) -> list[Any]:
        locks = _Locks(self._lock_dir, self.timeout)
        try:
            if batch.atomic:
                return self._run_atomic(batch.commands, locks)
            return self._run_each(batch.commands, locks)
        except OSError as exc:
            what = "atomic batch not applied" if batch.atomic else "batch"
            raise _os_error(exc, what) from exc
        finally:
            try:
                locks.close()
            except OSError as exc:
                raise _os_error(exc, "releasing locks") from exc

    def _run_each(self, commands: tuple[Command, ...], locks: _Locks) -> list[Any]:
        """A plain batch: each command is atomic on its own, under its stripe's lock.

        An OS error in one command becomes a `BackendError` in its slot; the rest still run.
        A lock that cannot be taken fails the whole batch (every later key would wait too).
        """
        results: list[Any] = []
        for cmd in commands:
            if type(cmd) is IndexRead:
                results.append(self._fsindex.read(cmd, self._prefix, _now()))
                continue
            loc = self._locate(cmd.key)
            stripe = loc.digest[:2]
            locks.acquire(stripe, type(cmd) not in READ_COMMANDS)
            try:
                now = _now()
                if type(cmd) is IndexedWrite:
                    result = self._index_write(cmd, loc, now)
                    results.append(result)
                    continue
                # A Set does not depend on what is there: skip reading it.
                entry = None if type(cmd) is Set else self._load(loc, now)
                result, new = _apply(cmd, entry, now)
                if new is not UNCHANGED:
                    self._store(loc, new)
            except OSError as exc:
                result = _os_error(exc, f"{type(cmd).__name__} {cmd.key!r}")
            finally:
                locks.release(stripe)
            results.append(result)
        return results

    def _index_write(self, cmd: IndexedWrite, loc: _Location, now: float) -> Any:
        """A row of an indexed model and its index entries (its stripe lock held)."""
        plain = _plain_write(cmd)

        def apply() -> tuple[Any, Any, bool]:
            result, new = _apply(plain, self._load(loc, now), now)
            if new is UNCHANGED:
                return result, None, False
            return result, new, True

        return self._fsindex.write(
            cmd, self._prefix + cmd.bucket, now, apply, lambda new: self._store(loc, new)
        )

    def _run_atomic(self, commands: tuple[Command, ...], locks: _Locks) -> list[Any]:
        """An atomic batch: lock every stripe (sorted, so batches never deadlock), compute all
        results against an in-memory view, write every temporary file, then rename them all.

        Any failure before the renames leaves the store untouched. Only a rename failing
        part-way (an I/O error of the filesystem itself; renames within a directory need no
        space) can leave the batch partly applied, and that is reported as such.
        """
        if any(type(cmd) is IndexedWrite or type(cmd) is IndexRead for cmd in commands):
            raise AtomicityError(
                "an atomic batch of rows of indexed models is not supported on the "
                "filesystem backend (each row is written atomically with its index entries)"
            )
        locs = [self._locate(cmd.key) for cmd in commands]
        exclusive: dict[str, bool] = {}
        for cmd, loc in zip(commands, locs, strict=True):
            stripe = loc.digest[:2]
            exclusive[stripe] = exclusive.get(stripe, False) or type(cmd) not in READ_COMMANDS
        for stripe in sorted(exclusive):
            locks.acquire(stripe, exclusive[stripe])
        now = _now()  # one instant for the whole batch
        state: dict[str, Entry | None] = {}
        dirty: dict[str, _Location] = {}
        results: list[Any] = []
        for cmd, loc in zip(commands, locs, strict=True):
            if loc.digest in state:
                entry = state[loc.digest]
            elif type(cmd) is Set:
                entry = None  # its result does not depend on the stored entry
            else:
                entry = state[loc.digest] = self._load(loc, now)
            result, new = _apply(cmd, entry, now)
            if new is not UNCHANGED:
                state[loc.digest] = new
                dirty[loc.digest] = loc
            results.append(result)
        if dirty:
            self._commit(dirty, state)
        return results

    def _commit(self, dirty: dict[str, _Location], state: dict[str, Entry | None]) -> None:
        staged: list[tuple[str, _Location]] = []
        deletes: list[_Location] = []
        try:
            for digest, loc in dirty.items():
                entry = state[digest]
                if entry is None:
                    deletes.append(loc)
                else:
                    data = _encode(loc.key_bytes, entry)
                    staged.append((_write_temp(loc.directory, digest, data, self.fsync), loc))
        except BaseException:
            for tmp, _ in staged:
                _discard(tmp)
            raise
        done = 0
        try:
            for tmp, loc in staged:
                os.replace(tmp, loc.file)
                done += 1
            for loc in deletes:
                _unlink(loc.file)
        except OSError as exc:
            for tmp, _ in staged[done:]:
                _discard(tmp)
            raise _os_error(exc, "atomic batch PARTLY applied (rename failed)") from exc
        if self.fsync:
            for directory in sorted({loc.directory for loc in dirty.values()}):
                _fsync_dir(directory)

    def _namespace_dirs(self) -> list[str]:
        if self.namespace:
            return [self._ns_dir]
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        return sorted(e.path for e in entries if _NS_NAME.fullmatch(e.name) and e.is_dir())

    def _empty_trash(self) -> None:
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return
        for e in entries:
            if e.name.startswith(_TRASH_PREFIX) and e.is_dir(follow_symlinks=False):
                _rmtree(e.path)

    def _clear_sync(self) -> None:
        if not os.path.isdir(self.path):
            return
        if os.path.exists(self._fsindex.file):
            self._fsindex.clear(self._prefix)
        locks = _Locks(self._lock_dir, self.timeout)
        try:
            # Under every lock, a rename takes the whole namespace out of sight at once; the
            # slow part (deleting the files) then runs without blocking anyone. Lock files
            # stay: deleting one another process holds would break mutual exclusion.
            for stripe in _STRIPES:
                locks.acquire(stripe, True)
            for ns_dir in self._namespace_dirs():
                trash = os.path.join(self.path, _TRASH_PREFIX + os.urandom(8).hex())
                try:
                    os.rename(ns_dir, trash)
                except FileNotFoundError:
                    continue
        except OSError as exc:
            raise _os_error(exc, "clear") from exc
        finally:
            locks.close()
        try:
            self._empty_trash()
        except OSError as exc:
            raise _os_error(exc, "clear (deleting the cleared files)") from exc

    def _scan_sync(self, shard: int, start: bytes, count: int) -> tuple[list[bytes], int]:
        """Keys starting with ``start`` from shard directories ``shard``, ``shard + 1``, ...
        until at least ``count`` are found; returns them and the next shard to read."""
        keys: list[bytes] = []
        while shard < len(_STRIPES) and len(keys) < count:
            stripe = _STRIPES[shard]
            shard += 1
            try:
                files = list(os.scandir(os.path.join(self._ns_dir, stripe)))
            except (FileNotFoundError, NotADirectoryError):
                continue
            now = _now()
            for f in files:
                name = f.name
                if not (_DATA_NAME.fullmatch(name) and name.startswith(stripe)):
                    continue  # temporary files, strays
                key = _key_of_file(f.path, name, now)
                if key is not None and key.startswith(start):
                    keys.append(key)
        return keys, shard

    def _cull_sync(self) -> int:
        by_stripe: dict[str, list[str]] = {}
        for ns_dir in self._namespace_dirs():
            try:
                entries = list(os.scandir(ns_dir))
            except FileNotFoundError:
                continue
            for e in entries:
                if _SHARD_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False):
                    by_stripe.setdefault(e.name, []).append(e.path)
        removed = 0
        locks = _Locks(self._lock_dir, self.timeout)
        try:
            for stripe in sorted(by_stripe):
                locks.acquire(stripe, True)
                try:
                    now = _now()
                    for stripe_dir in by_stripe[stripe]:
                        removed += self._cull_stripe(stripe_dir, stripe, now)
                finally:
                    locks.release(stripe)
        finally:
            locks.close()
        self._empty_trash()
        return removed

    def _cull_stripe(self, stripe_dir: str, stripe: str, now: float) -> int:
        """Cull one ``<ns>/<aa>`` directory; the caller holds stripe ``aa`` exclusively, so
        every temporary file there belongs to a writer that is gone."""
        removed = 0
        try:
            files = list(os.scandir(stripe_dir))
        except FileNotFoundError:
            return 0
        for f in files:
            name = f.name
            if _DATA_NAME.fullmatch(name) and name.startswith(stripe):
                if _header_says_remove(f.path, now) and _unlink(f.path):
                    removed += 1
            elif (m := _TEMP_NAME.fullmatch(name)) and m.group(1).startswith(stripe):
                if _unlink(f.path):
                    removed += 1
        _rmdir_if_empty(stripe_dir)
        return removed
