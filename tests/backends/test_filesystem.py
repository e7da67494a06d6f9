"""FileSystemBackend specifics: on-disk format, crash safety, hostile keys, expiry and cull,
corrupt files, locking across threads and processes, and I/O kept off the event loop.

The behaviours every backend shares are in test_conformance.py
(``ACACHEORM_TEST_BACKENDS=filesystem``).
"""

# These tests inspect the files on disk on purpose, synchronously, between awaits.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

import acacheorm.backends.filesystem as fsmod
from acacheorm._commands import (
    KEEP_TTL,
    Add,
    Batch,
    Cas,
    Delete,
    Get,
    Gets,
    Incr,
    Replace,
    Set,
    Touch,
)
from acacheorm._exceptions import BackendError, BackendUnavailable
from acacheorm.backends.filesystem import FileSystemBackend

# The documented header, re-stated here so the tests check the format, not the code.
HEADER = struct.Struct("<4sBBHdQIQI")
SRC_DIR = str(Path(fsmod.__file__).resolve().parents[2])


def parse(path: str) -> dict[str, Any]:
    data = Path(path).read_bytes()
    magic, version, flags, _res, expires, token, klen, vlen, crc = HEADER.unpack_from(data)
    return {
        "magic": magic,
        "version": version,
        "flags": flags,
        "expires": expires,
        "token": token,
        "key": data[HEADER.size : HEADER.size + klen],
        "value": data[HEADER.size + klen :],
        "vlen": vlen,
        "crc": crc,
    }


async def until(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    """Bounded polling for something another thread or process does."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the timeout")
        await asyncio.sleep(0.005)


async def spawn(script: str, *args: str) -> asyncio.subprocess.Process:
    """Run ``script`` in a fresh interpreter that imports this acacheorm."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        env={**os.environ, "PYTHONPATH": SRC_DIR},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, limit: float = 120) -> tuple[int, bytes, bytes]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if not p.is_dir()]


def data_files(root: Path) -> list[Path]:
    return [
        p for p in all_files(root) if p.parent.parent.name.startswith("ns-") and len(p.name) == 64
    ]


def temp_files(root: Path) -> list[Path]:
    return [p for p in all_files(root) if p.name.endswith(".tmp")]


def stripe_lock(backend: FileSystemBackend, key: str) -> str:
    return os.path.join(
        backend.path, "locks", os.path.basename(backend.file_for(key))[:2] + ".lock"
    )


@contextlib.contextmanager
def holding(backend: FileSystemBackend, key: str) -> Iterator[None]:
    """Hold the stripe lock of ``key`` exclusively, as another process would."""
    path = stripe_lock(backend, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_locked(path: str) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.fixture
async def fs(tmp_path: Path) -> AsyncIterator[FileSystemBackend]:
    async with FileSystemBackend(tmp_path / "root", namespace="ns") as backend:
        yield backend


# -- format and layout ---------------------------------------------------------------------


async def test_file_layout_and_header(fs: FileSystemBackend, tmp_path: Path) -> None:
    await fs.set("user:1", b"hello")
    digest = hashlib.sha256(b"ns:user:1").hexdigest()
    ns_dir = "ns-" + hashlib.sha256(b"ns").hexdigest()[:32]
    expected = tmp_path / "root" / ns_dir / digest[:2] / digest
    assert fs.file_for("user:1") == str(expected)
    head = parse(str(expected))
    assert head["magic"] == b"ACFS"
    assert head["version"] == fsmod.FORMAT_VERSION == 1
    assert head["flags"] == 0
    assert head["expires"] == 0.0
    assert head["key"] == b"ns:user:1"
    assert head["value"] == b"hello" and head["vlen"] == 5
    [(value, token)] = await fs.execute(Batch((Gets("user:1"),)))
    assert (value, token) == (b"hello", head["token"])

    before = time.time()
    await fs.set("user:1", b"hello", ttl=60)
    after = time.time()
    assert before + 60 <= parse(str(expected))["expires"] <= after + 60
    assert data_files(tmp_path / "root") == [expected]


async def test_hostile_keys_never_collide_or_escape(tmp_path: Path) -> None:
    around = tmp_path.parent
    before = sorted(os.listdir(around))
    root = tmp_path / "root"
    keys = [
        "../x",
        "../../etc/passwd",
        "/abs/path",
        "a/b/c",
        "a\\b",
        "nul\x00byte",
        "\x00",
        "k" * 10_240,
        "Key",
        "key",
        "KEY",
        ".",
        "..",
        "",
        " ",
        "ns-0",
        "locks",
        ".trash-x",
        "\udc80lone surrogate",
        "ünïcødé",
        "%2e%2e%2f",
    ]
    async with FileSystemBackend(root, namespace="../../evil/ns", fsync=False) as backend:
        await backend.set_many({k: f"value {i}".encode() for i, k in enumerate(keys)})
        assert await backend.get_many(*keys) == [f"value {i}".encode() for i in range(len(keys))]
        assert len({backend.file_for(k) for k in keys}) == len(keys)
        for k in keys:
            assert parse(backend.file_for(k))["key"] == ("../../evil/ns:" + k).encode(
                "utf-8", "surrogatepass"
            )
    real_root = os.path.realpath(root)
    for path in root.rglob("*"):
        assert not path.is_symlink()
        assert os.path.commonpath([real_root, os.path.realpath(path)]) == real_root
    assert len(data_files(root)) == len(keys)
    assert os.listdir(tmp_path) == ["root"]
    assert sorted(os.listdir(around)) == before


# -- crash safety --------------------------------------------------------------------------


async def test_stray_temp_file_is_ignored_then_culled(fs: FileSystemBackend) -> None:
    await fs.set("k", b"old value" * 50)
    target = fs.file_for("k")
    whole = Path(target).read_bytes()
    # What a writer killed mid-write leaves: a partial new file next to the intact old one.
    stray = Path(target).parent / f".{Path(target).name}.0123456789ab.tmp"
    stray.write_bytes(whole[: len(whole) // 2])
    assert await fs.get("k") == b"old value" * 50
    assert await fs.has("k") is True
    assert await fs.cull() == 1
    assert not stray.exists()
    assert await fs.get("k") == b"old value" * 50


CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    import acacheorm.backends.filesystem as fsmod

    root, key, mode = sys.argv[1:4]

    async def main():
        backend = fsmod.FileSystemBackend(root, namespace="crash")
        if mode == "existing":
            await backend.set(key, b"old " * 1000)
        real = fsmod._write_all

        def die_half_way(fd, data):
            real(fd, data[: len(data) // 2])
            os._exit(9)  # SIGKILL-like: no cleanup, no finally blocks

        fsmod._write_all = die_half_way
        await backend.set(key, b"new " * 1000)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("mode", ["existing", "fresh"])
async def test_writer_killed_mid_write_never_shows_a_torn_value(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "root"
    code, _out, err = await finish(await spawn(CRASH_SCRIPT, str(root), "k", mode))
    assert code == 9, err.decode()
    assert len(temp_files(root)) == 1
    async with FileSystemBackend(root, namespace="crash") as backend:
        expected = b"old " * 1000 if mode == "existing" else None
        assert await backend.get("k") == expected
        assert await backend.add("k", b"x") is (mode == "fresh")
        assert await backend.cull() == 1
        assert temp_files(root) == []


async def test_failed_write_keeps_old_value_and_leaves_no_temp(
    fs: FileSystemBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await fs.set("k", b"old")
    real = fsmod._write_all

    def disk_full(fd: int, data: bytes) -> None:
        real(fd, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsmod, "_write_all", disk_full)
    with pytest.raises(BackendError, match="no space left") as info:
        await fs.set("k", b"new value")
    assert isinstance(info.value.__cause__, OSError)
    # In a plain batch the failure is that command's slot; the reads still answer.
    results = await fs.execute(Batch((Set("k", b"new", None), Get("k"), Incr("n", 1, None))))
    assert isinstance(results[0], BackendError) and isinstance(results[2], BackendError)
    assert results[1] == b"old"
    monkeypatch.undo()
    assert await fs.get("k") == b"old"
    assert await fs.get("n") is None
    assert temp_files(tmp_path / "root") == []


# -- corrupt and foreign files -------------------------------------------------------------


def corrupt(kind: str, path: str, other_file: str) -> None:
    data = Path(path).read_bytes()
    if kind == "truncated":
        data = data[: len(data) - 7]
    elif kind == "header-only":
        data = data[:20]
    elif kind == "empty":
        data = b""
    elif kind == "bit-flip":
        data = data[:-1] + bytes([data[-1] ^ 1])
    elif kind == "expiry-flip":
        data = data[:8] + struct.pack("<d", 1.0) + data[16:]  # crc catches header damage too
    elif kind == "bad-magic":
        data = b"XXXX" + data[4:]
    elif kind == "future-version":
        data = data[:4] + b"\x02" + data[5:]
    elif kind == "garbage":
        data = os.urandom(300)
    elif kind == "other-key":
        data = Path(other_file).read_bytes()
    Path(path).write_bytes(data)


CORRUPTIONS = [
    "truncated",
    "header-only",
    "empty",
    "bit-flip",
    "expiry-flip",
    "bad-magic",
    "future-version",
    "garbage",
    "other-key",
]
OPERATIONS: dict[str, tuple[Any, Any]] = {
    # command on the corrupt key -> the result an absent key gives
    "get": (Get("k"), None),
    "gets": (Gets("k"), None),
    "add": (Add("k", b"fresh", None), True),
    "replace": (Replace("k", b"fresh", None), False),
    "cas": (Cas("k", b"fresh", 0, KEEP_TTL), False),
    "delete": (Delete("k"), False),
    "incr": (Incr("k", 5, None), 5),
    "touch": (Touch("k", 10.0), False),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("op", list(OPERATIONS))
async def test_unreadable_file_is_an_absent_key_for_every_operation(
    fs: FileSystemBackend, caplog: pytest.LogCaptureFixture, kind: str, op: str
) -> None:
    await fs.set_many({"k": b"stored value", "other": b"another value"})
    path = fs.file_for("k")
    corrupt(kind, path, fs.file_for("other"))
    cmd, absent_result = OPERATIONS[op]
    with caplog.at_level(logging.WARNING, logger=fsmod.__name__):
        assert await fs.execute(Batch((cmd,))) == [absent_result]
    assert "unreadable" in caplog.text
    writes = op in ("add", "incr")
    assert os.path.exists(path) is writes  # removed when seen, unless rewritten
    assert await fs.get("k") == {"add": b"fresh", "incr": b"5"}.get(op)
    assert await fs.get("other") == b"another value"


async def test_cull_removes_unreadable_files_and_keeps_foreign_names(
    fs: FileSystemBackend, tmp_path: Path
) -> None:
    await fs.set_many({"a": b"1", "b": b"2"})
    Path(fs.file_for("a")).write_bytes(b"garbage")
    foreign = Path(fs.file_for("b")).parent / "README"
    foreign.write_text("not ours")
    assert await fs.cull() == 1
    assert not os.path.exists(fs.file_for("a"))
    assert foreign.exists()
    assert await fs.get("b") == b"2"


# -- expiry and cull -----------------------------------------------------------------------


async def test_expired_files_are_absent_removed_when_seen_and_culled(
    fs: FileSystemBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await fs.set_many({"a": b"1", "b": b"2", "seen": b"3"}, ttl=30)
    await fs.set("forever", b"4")
    await fs.set("later", b"5", ttl=3600)
    [(_, token)] = await fs.execute(Batch((Gets("seen"),)))
    real_now = time.time
    monkeypatch.setattr(fsmod, "_now", lambda: real_now() + 60)  # wall clock moved on
    assert len(data_files(tmp_path / "root")) == 5  # nothing seen yet, nothing removed
    assert await fs.execute(Batch((Cas("seen", b"x", token, KEEP_TTL),))) == [False]
    assert not os.path.exists(fs.file_for("seen"))  # removed when seen
    assert await fs.cull() == 2
    assert not os.path.exists(fs.file_for("a")) and not os.path.exists(fs.file_for("b"))
    assert await fs.get_many("a", "b", "seen", "forever", "later") == [
        None,
        None,
        None,
        b"4",
        b"5",
    ]
    assert await fs.cull() == 0


async def test_cull_without_namespace_covers_every_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    async with (
        FileSystemBackend(root, namespace="one", fsync=False) as one,
        FileSystemBackend(root, namespace="two", fsync=False) as two,
        FileSystemBackend(root, fsync=False) as everything,
    ):
        await one.set("k", b"1", ttl=5)
        await two.set("k", b"2", ttl=5)
        await two.set("kept", b"3")
        real_now = time.time
        monkeypatch.setattr(fsmod, "_now", lambda: real_now() + 10)
        assert await one.cull() == 1
        assert await everything.cull() == 1
        assert await two.get("kept") == b"3"


async def test_incr_ttl_applies_only_on_creation(fs: FileSystemBackend) -> None:
    assert await fs.incr("n", 5, ttl=100) == 5
    expires = parse(fs.file_for("n"))["expires"]
    assert expires > time.time() + 90
    assert await fs.incr("n", -7, ttl=5) == -2
    head = parse(fs.file_for("n"))
    assert head["expires"] == expires and head["value"] == b"-2"
    results = await fs.execute(
        Batch((Set("s", b"1.5", None), Incr("s", 1, None), Get("s"), Incr("n", 1, None)))
    )
    assert results[0] is True and isinstance(results[1], BackendError)
    assert results[2:] == [b"1.5", -1]


async def test_token_names_the_written_version(fs: FileSystemBackend) -> None:
    await fs.set("k", b"same", ttl=100)
    [(_, first)] = await fs.execute(Batch((Gets("k"),)))
    await fs.set("k", b"same", ttl=100)  # same bytes, a new version: no ABA
    [(_, second)] = await fs.execute(Batch((Gets("k"),)))
    assert first != second
    assert await fs.execute(Batch((Cas("k", b"x", first, KEEP_TTL),))) == [False]
    assert await fs.touch("k", 200) is True  # the value did not change, nor does its token
    expires = parse(fs.file_for("k"))["expires"]
    assert await fs.execute(Batch((Gets("k"),))) == [(b"same", second)]
    assert await fs.execute(Batch((Cas("k", b"new", second, KEEP_TTL),))) == [True]
    head = parse(fs.file_for("k"))
    assert head["value"] == b"new" and head["expires"] == expires
    assert await fs.execute(Batch((Replace("k", b"newer", KEEP_TTL),))) == [True]
    assert parse(fs.file_for("k"))["expires"] == expires


# -- clear ---------------------------------------------------------------------------------


async def test_clear_removes_only_what_it_owns(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("the user's file")
    (root / "mine").mkdir()
    async with (
        FileSystemBackend(root, namespace="a", fsync=False) as a,
        FileSystemBackend(root, namespace="b", fsync=False) as b,
        FileSystemBackend(root, fsync=False) as everything,
    ):
        await a.set_many({f"k{i}": b"a" for i in range(50)})
        await b.set("k0", b"b")
        await everything.set("k0", b"root")
        stray = Path(a.file_for("k0")).parent / f".{'0' * 64}.0123456789ab.tmp"
        stray.write_bytes(b"half")
        await a.clear()
        assert await a.get_many("k0", "k49") == [None, None]
        assert await b.get("k0") == b"b" and await everything.get("k0") == b"root"
        assert not stray.exists()
        assert not os.path.exists(os.path.dirname(os.path.dirname(a.file_for("k0"))))
        await everything.clear()
        assert await b.get("k0") is None and await everything.get("k0") is None
    assert sorted(os.listdir(root)) == ["locks", "mine", "notes.txt"]
    assert (root / "notes.txt").read_text() == "the user's file"


async def test_clear_of_a_missing_directory_is_a_no_op(tmp_path: Path) -> None:
    async with FileSystemBackend(tmp_path / "nowhere") as backend:
        await backend.clear()
        assert await backend.cull() == 0
    assert not (tmp_path / "nowhere").exists()


async def test_lock_files_stay_bounded(fs: FileSystemBackend, tmp_path: Path) -> None:
    await fs.set_many({f"key{i}": b"v" for i in range(2000)})
    locks = os.listdir(tmp_path / "root" / "locks")
    assert 200 < len(locks) <= 256
    assert all(len(name) == len("ab.lock") and name.endswith(".lock") for name in locks)


async def test_a_fifo_at_a_key_path_does_not_hang(fs: FileSystemBackend) -> None:
    await fs.set("k", b"v")
    path = fs.file_for("k")
    os.unlink(path)
    os.mkfifo(path)
    assert await fs.get("k") is None  # unreadable, so absent (and removed)
    assert not os.path.exists(path)


# -- errors ----------------------------------------------------------------------------------


async def test_os_errors_become_backend_errors(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"I am a file")
    async with FileSystemBackend(not_a_dir) as backend:
        for call in (
            lambda: backend.set("k", b"v"),
            lambda: backend.get("k"),
            lambda: backend.execute(Batch((Set("k", b"v", None),), atomic=True)),
            backend.cull,
        ):
            with pytest.raises(BackendError) as info:
                await call()
            assert isinstance(info.value.__cause__, OSError)
        await backend.clear()  # nothing of ours is there
    assert not_a_dir.read_bytes() == b"I am a file"


async def test_lock_wait_is_bounded_by_timeout(tmp_path: Path) -> None:
    async with FileSystemBackend(tmp_path / "root", timeout=0.2) as backend:
        with holding(backend, "k"):
            with pytest.raises(BackendUnavailable, match="timed out"):
                await backend.get("k")
        assert await backend.get("k") is None


# -- atomic batches ------------------------------------------------------------------------


def keys_on_two_stripes(backend: FileSystemBackend) -> tuple[str, str]:
    first = "a"
    stripe = os.path.basename(backend.file_for(first))[:2]
    second = next(
        f"b{i}" for i in range(1000) if os.path.basename(backend.file_for(f"b{i}"))[:2] > stripe
    )
    return first, second


async def test_atomic_batch_writes_nothing_if_any_write_fails(
    fs: FileSystemBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a, b = keys_on_two_stripes(fs)
    await fs.set_many({a: b"1", b: b"1"})
    real = fsmod._write_temp
    calls = 0

    def second_write_fails(*args: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(fsmod, "_write_temp", second_write_fails)
    batch = Batch((Set(a, b"2", None), Delete("gone"), Set(b, b"2", None)), atomic=True)
    with pytest.raises(BackendError, match="not applied"):
        await fs.execute(batch)
    monkeypatch.undo()
    assert await fs.get_many(a, b) == [b"1", b"1"]
    assert temp_files(tmp_path / "root") == []
    results = await fs.execute(
        Batch(
            (
                Set(a, b"2", None),
                Incr(a, 1, None),
                Add(b, b"x", None),
                Get(a),
                Delete(b),
                Gets(b),
                Set("s", b"text", None),
                Incr("s", 1, None),
            ),
            atomic=True,
        )
    )
    assert results[:6] == [True, 3, False, b"3", True, None]
    assert results[6] is True and isinstance(results[7], BackendError)  # a slot error only
    assert await fs.get_many(a, b, "s") == [b"3", None, b"text"]


async def test_atomic_batch_holds_every_lock_until_done(
    fs: FileSystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = keys_on_two_stripes(fs)
    await fs.set_many({a: b"old", b: b"old"})
    parked, proceed = threading.Event(), threading.Event()
    real = fsmod._write_temp

    def park_first_write(*args: Any) -> str:
        if not parked.is_set():
            parked.set()
            assert proceed.wait(30)
        return real(*args)

    monkeypatch.setattr(fsmod, "_write_temp", park_first_write)
    task = asyncio.create_task(
        fs.execute(Batch((Set(a, b"new", None), Set(b, b"new", None)), atomic=True))
    )
    await until(parked.is_set)
    # Mid-batch: both stripes are held, so no reader or writer anywhere can see a mix.
    assert is_locked(stripe_lock(fs, a)) and is_locked(stripe_lock(fs, b))
    proceed.set()
    assert await asyncio.wait_for(task, 30) == [True, True]
    assert not is_locked(stripe_lock(fs, a)) and not is_locked(stripe_lock(fs, b))
    assert await fs.get_many(a, b) == [b"new", b"new"]


# -- off the event loop ---------------------------------------------------------------------


async def test_file_io_runs_in_worker_threads(
    fs: FileSystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []

    def spy(name: str) -> None:
        real = getattr(fsmod, name)

        def wrapper(*args: Any) -> Any:
            threads.append(threading.get_ident())
            return real(*args)

        monkeypatch.setattr(fsmod, name, wrapper)

    for name in ("_read_file", "_write_temp", "_rmtree", "_header_says_remove"):
        spy(name)
    await fs.set("k", b"v", ttl=30)
    assert await fs.get_many("k", "missing") == [b"v", None]
    assert await fs.cull() == 0
    await fs.clear()
    assert len(threads) >= 5
    assert threading.get_ident() not in threads


async def test_one_thread_hop_per_batch(
    fs: FileSystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = 0
    real = anyio.to_thread.run_sync

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    await fs.set_many({f"k{i}": b"v" for i in range(100)})
    assert await fs.get_many(*[f"k{i}" for i in range(100)]) == [b"v"] * 100
    assert hops == 2


async def test_loop_stays_responsive_while_a_batch_waits(
    fs: FileSystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = threading.Event()
    real_acquire = fsmod._Locks.acquire

    def acquire(self: Any, stripe: str, exclusive: bool) -> None:
        waiting.set()
        real_acquire(self, stripe, exclusive)

    monkeypatch.setattr(fsmod._Locks, "acquire", acquire)
    with holding(fs, "k"):
        task = asyncio.create_task(fs.set("k", b"v"))
        await until(waiting.is_set)
        ticks = 0
        for _ in range(200):  # the loop keeps turning while the batch is blocked on the lock
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 200 and not task.done()
    await asyncio.wait_for(task, 30)
    assert await fs.get("k") == b"v"


async def test_a_cancelled_write_is_finished_before_the_cancellation_returns(
    fs: FileSystemBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """anyio's thread offload: cancelling the await does not abandon the worker thread; the
    CancelledError arrives once the write has run, so nothing lands behind the caller."""
    waiting = threading.Event()
    real_acquire = fsmod._Locks.acquire

    def acquire(self: Any, stripe: str, exclusive: bool) -> None:
        waiting.set()
        real_acquire(self, stripe, exclusive)

    monkeypatch.setattr(fsmod._Locks, "acquire", acquire)
    with holding(fs, "k"):
        task = asyncio.create_task(fs.set("k", b"v"))
        await until(waiting.is_set)  # the worker thread is blocked on the lock
        task.cancel()
        for _ in range(100):
            await asyncio.sleep(0)
        assert not task.done()  # still waiting for its thread, not abandoned
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert await fs.get("k") == b"v"  # the write ran to its end before the cancellation


# -- across processes ------------------------------------------------------------------------

WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from acacheorm._commands import KEEP_TTL, Batch, Cas, Gets
    from acacheorm.backends.filesystem import FileSystemBackend

    root, mode, count, ready, go = sys.argv[1:6]

    async def main():
        backend = FileSystemBackend(root, namespace="race")
        open(ready, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(go):  # start together, to overlap as much as possible
            if time.monotonic() > deadline:
                sys.exit("never told to go")
            time.sleep(0.001)
        retries = 0
        for _ in range(int(count)):
            if mode == "incr":
                await backend.incr("counter")
                continue
            while True:
                [(value, token)] = await backend.execute(Batch((Gets("counter"),)))
                new = str(int(value) + 1).encode()
                [ok] = await backend.execute(Batch((Cas("counter", new, token, KEEP_TTL),)))
                if ok:
                    break
                retries += 1
        print(retries)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("mode", ["incr", "cas"])
async def test_two_processes_count_exactly(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "root"
    count, workers = 200, 2
    async with FileSystemBackend(root, namespace="race") as backend:
        if mode == "cas":
            await backend.set("counter", b"0")
        go = tmp_path / "go"
        ready = [tmp_path / f"ready{i}" for i in range(workers)]
        procs = [
            await spawn(WORKER_SCRIPT, str(root), mode, str(count), str(r), str(go)) for r in ready
        ]
        try:
            await until(lambda: all(r.exists() for r in ready), limit=60)
            go.touch()
            for proc in procs:
                code, out, err = await finish(proc)
                assert code == 0, err.decode()
                print(f"{mode}: worker {proc.pid} retried {out.decode().strip()} times")
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert await backend.get("counter") == str(count * workers).encode()
