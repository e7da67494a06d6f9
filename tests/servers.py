"""Real servers for the test suite: redis-server (standalone and a 3-master Cluster) and
memcached nodes on free loopback ports, started from the binaries on PATH and stopped at the
end. Set ACACHEORM_TEST_REDIS_URL, ACACHEORM_TEST_REDIS_CLUSTER_URL or
ACACHEORM_TEST_MEMCACHED (``host:port,host:port``) to use servers you run yourself
(docker-compose.yml starts a matching set).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port for a Cluster node: its bus port (port + 10000) must be valid and free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not on PATH; install it (Debian: apt-get install redis-server memcached) "
            "or point the suite at external servers (see tests/servers.py)"
        )
    return path


def _ask(port: int, request: bytes, timeout: float = 1.0) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request)
        return s.recv(65536)


def _wait(predicate: object, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except OSError as exc:
            last = exc
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not come up within {timeout}s ({last!r})")


class RedisServer:
    """One redis-server process; `stop` and `start` keep its port (for fault tests)."""

    def __init__(self, port: int | None = None, *extra: str, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.extra = list(extra)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="acacheorm-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        args = [
            _binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "no",
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: b"PONG" in _ask(self.port, b"PING\r\n"), f"redis-server :{self.port}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def command(self, *words: str) -> bytes:
        parts = [f"*{len(words)}\r\n".encode()]
        for w in words:
            b = w.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return _ask(self.port, b"".join(parts))


class RedisCluster:
    """Three redis-server masters joined with ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="acacheorm-cluster-"))
        self.nodes: list[RedisServer] = []
        for i in range(masters):
            d = self.workdir / str(i)
            d.mkdir()
            self.nodes.append(
                RedisServer(
                    free_cluster_port(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    workdir=d,
                )
            )

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.nodes[0].port}/0"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()  # no node left running (nor a ResourceWarning) if one fails
            raise

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *[f"{HOST}:{n.port}" for n in self.nodes],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

        def ready() -> bool:
            return all(
                b"cluster_state:ok" in n.command("CLUSTER", "INFO")
                and n.command("CLUSTER", "NODES").count(b"master") >= len(self.nodes)
                for n in self.nodes
            )

        _wait(ready, "redis cluster", timeout=30)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Memcached:
    """One memcached process on a free loopback port."""

    def __init__(self, port: int | None = None, threads: int | None = None) -> None:
        self.port = port or free_port()
        self.threads = threads  # memcached's worker threads (None: its default, 4)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def start(self) -> None:
        args = [
            _binary("memcached"),
            "-l",
            HOST,
            "-p",
            str(self.port),
            "-U",
            "0",
            "-m",
            "64",
            "-u",
            "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
        ]
        if self.threads is not None:
            args += ["-t", str(self.threads)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: b"VERSION" in _ask(self.port, b"version\r\n"), f"memcached :{self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def running(server: RedisServer | RedisCluster | Memcached) -> Iterator[None]:
    server.start()
    try:
        yield
    finally:
        server.stop()


def freeze(proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP a server and wait until the kernel reports it stopped: the signal is delivered
    asynchronously, and a server still running on the other core may answer a request sent
    right after ``send_signal`` returns."""
    proc.send_signal(signal.SIGSTOP)

    def stopped() -> bool:
        with open(f"/proc/{proc.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")

    _wait(stopped, f"process {proc.pid} stopping", timeout=5.0)
