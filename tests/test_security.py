"""Security: Redis ACL users and TLS against real servers, credentials kept out of reprs, logs
and exceptions, signed pickles, and `clear()` confined to its namespace.

The TLS server is a redis-server with ``--port 0 --tls-port N`` and a throwaway CA and
certificate made here with ``cryptography``; the ACL server loads an ACL file in which the
default user may only PING.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import pickle
import shutil
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import acacheorm as co
from acacheorm import _codec
from acacheorm.backends.base import Backend
from acacheorm.backends.memcached import MemcachedBackend
from acacheorm.backends.redis import RedisBackend
from acacheorm.serializers.pickle import KEY_ENV_VAR, PickleSerializer
from tests import servers
from tests.conftest import BACKENDS, unique_namespace

USER = "alice"
# URL-special characters on purpose: they must be quoted in the URL and still work.
PASSWORD = "Sup3r:s3cr3t@p/ss%w0rd"
WRONG = "not-the-Password-42"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), WRONG)


def _needs(kind: str) -> None:
    if kind not in BACKENDS:
        pytest.skip(f"{kind} is not in ACACHEORM_TEST_BACKENDS")


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password appears in {where}: {text!r}"


def assert_exception_clean(exc: BaseException) -> None:
    """No password in the message, repr or args of ``exc`` or anything it was raised from."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        assert_no_secret(str(e), f"str() of {type(e).__name__}")
        assert_no_secret(repr(e), f"repr() of {type(e).__name__}")
        assert_no_secret(repr(e.args), f"args of {type(e).__name__}")
        todo += [e.__cause__, e.__context__]


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"log record {record.name}")
        assert_no_secret(repr(record.args), f"log record args {record.name}")
    assert_no_secret(caplog.text, "the formatted log")


# -- a throwaway CA and certificates ----------------------------------------------------------


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing the server has


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(servers.HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = _ca("acacheorm test CA")
    key, cert = _leaf(ca_key, ca_cert)
    _, other = _ca("some other CA")
    (d / "ca.pem").write_bytes(_pem(ca_cert))
    (d / "other-ca.pem").write_bytes(_pem(other))
    (d / "server.pem").write_bytes(_pem(cert))
    (d / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (d / "server.key").chmod(0o600)
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "other-ca.pem")


# -- servers: ACL, TLS ------------------------------------------------------------------------


def _acl_file(directory: Path) -> Path:
    path = directory / "users.acl"
    path.write_text(
        # Without credentials a client is "default", which may only PING (the harness's
        # readiness check); alice may do everything.
        f"user default on nopass -@all +ping\nuser {USER} on >{PASSWORD} ~* &* +@all\n"
    )
    return path


class TLSRedisServer(servers.RedisServer):
    """A redis-server that speaks TLS only (``--port 0``), ready once a TLS PING answers."""

    def __init__(self, certs: Certs, *extra: str) -> None:
        super().__init__(None, *extra)
        self.certs = certs

    @property
    def url(self) -> str:
        return f"rediss://{servers.HOST}:{self.port}/0"

    def start(self) -> None:
        args = [
            servers._binary("redis-server"),
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.certs.cert),
            "--tls-key-file",
            str(self.certs.key),
            "--tls-ca-cert-file",
            str(self.certs.ca),
            "--tls-auth-clients",
            "no",
            "--bind",
            servers.HOST,
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
        context = ssl.create_default_context(cafile=str(self.certs.ca))

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    "redis-server exited at start: does this build support TLS? "
                    "(Debian's does; a build without BUILD_TLS=yes does not)"
                )
            with socket.create_connection((servers.HOST, self.port), timeout=1) as raw:
                with context.wrap_socket(raw, server_hostname=servers.HOST) as s:
                    s.sendall(b"PING\r\n")
                    return b"PONG" in s.recv(100)

        try:
            servers._wait(ready, f"redis-server TLS :{self.port}")
        except BaseException:
            self.stop()
            raise


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    _needs("redis")
    d = tmp_path_factory.mktemp("acl")
    server = servers.RedisServer(None, "--aclfile", str(_acl_file(d)))
    with servers.running(server):
        yield server
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_server(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedisServer]:
    _needs("redis")
    d = tmp_path_factory.mktemp("tlsacl")
    server = TLSRedisServer(certs, "--aclfile", str(_acl_file(d)))
    with servers.running(server):
        yield server
    shutil.rmtree(server.workdir, ignore_errors=True)


def _url(scheme: str, port: int, user: str = USER, password: str = PASSWORD) -> str:
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{servers.HOST}:{port}/0"


async def _round_trip(backend: Backend) -> None:
    async with asyncio.timeout(10):
        await backend.set("k", b"v", ttl=60)
        assert await backend.get("k") == b"v"
        assert await backend.get_many("k", "missing") == [b"v", None]
        assert await backend.delete("k") is True


# -- Redis ACL --------------------------------------------------------------------------------


async def test_acl_user_and_password(acl_server: servers.RedisServer) -> None:
    url = _url("redis", acl_server.port)
    async with RedisBackend(url, namespace=unique_namespace("acl")) as backend:
        await _round_trip(backend)
        whoami = await backend.client.execute_command("ACL", "WHOAMI")
        assert whoami == USER.encode()
        assert_no_secret(repr(backend), "repr(backend)")
        assert USER not in repr(backend)
    # backend_from_url, with the namespace in the URL
    async with co.backend_from_url(url + "?namespace=acl2") as backend:
        assert isinstance(backend, RedisBackend) and backend.namespace == "acl2"
        await _round_trip(backend)
        assert_no_secret(repr(backend), "repr(backend_from_url(...))")
    # credentials as options instead of in the URL
    plain = f"redis://{servers.HOST}:{acl_server.port}/0"
    async with RedisBackend(plain, username=USER, password=PASSWORD) as backend:
        await _round_trip(backend)
        assert_no_secret(repr(backend), "repr(backend)")


@pytest.mark.parametrize(
    "how", ["wrong password", "unknown user", "no credentials", "wrong password as option"]
)
async def test_acl_refusals_are_clear_errors(acl_server: servers.RedisServer, how: str) -> None:
    port = acl_server.port
    options: dict[str, Any] = {}
    if how == "wrong password":
        url = _url("redis", port, password=WRONG)
    elif how == "unknown user":
        url = _url("redis", port, user="mallory")
    elif how == "wrong password as option":
        url = f"redis://{servers.HOST}:{port}/0"
        options = {"username": USER, "password": WRONG}
    else:
        url = f"redis://{servers.HOST}:{port}/0"
    async with RedisBackend(url, timeout=2, **options) as backend:
        async with asyncio.timeout(10):
            with pytest.raises(co.BackendError) as info:
                await backend.get("k")
            with pytest.raises(co.BackendError):
                await backend.set("k", b"v")
    exc = info.value
    message = str(exc)
    if how == "no credentials":
        # The default user exists but may not GET: the server's refusal, named as such.
        assert "NOPERM" in message or "permission" in message.lower(), message
    else:
        # Not "unavailable": a bad configuration must not look like an outage to retry.
        assert not isinstance(exc, co.BackendUnavailable), message
        assert "refused the credentials" in message, message
    assert_exception_clean(exc)


async def test_credentials_never_in_logs(
    acl_server: servers.RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, acacheorm's and redis-py's
    store = RedisBackend(_url("redis", acl_server.port), namespace=unique_namespace("log"))
    wrong = RedisBackend(_url("redis", acl_server.port, password=WRONG), timeout=2)
    down = RedisBackend(_url("redis", servers.free_port()), timeout=2)
    async with store, wrong, down:
        Secretive = _model("Secretive", store, "json")
        await Secretive.create(id=1, name="x")
        assert (await Secretive.get(id=1)).name == "x"
        await Secretive.update(id=1, name="y")
        await Secretive.query_many(1, 2)
        await store.clear()
        for failing in (wrong, down):
            with pytest.raises(co.BackendError) as info:
                await _model("Failing", failing, "json").get(id=1)
            logging.getLogger("acacheorm.test").error("failed", exc_info=info.value)
    assert any(r.name == "acacheorm" for r in caplog.records)
    assert_logs_clean(caplog)


async def test_credentials_never_in_exceptions() -> None:
    port = servers.free_port()  # nothing listens there
    for scheme in ("redis", "rediss"):
        url = _url(scheme, port)
        for make in (RedisBackend, co.backend_from_url):
            async with make(url, timeout=1) as backend:
                assert_no_secret(repr(backend), f"repr of a {scheme} backend")
                async with asyncio.timeout(10):
                    with pytest.raises(co.BackendUnavailable) as info:
                        await backend.get("k")
                assert_exception_clean(info.value)
    # Bad URLs and options say what is wrong without echoing the password.
    bad = [
        f"redis://{USER}:{quote(PASSWORD, safe='')}@{servers.HOST}:notaport/0",
        f"redis://{USER}:{quote(PASSWORD, safe='')}@{servers.HOST}:{port}/0?db=notanumber",
        f"redis://{USER}:{quote(PASSWORD, safe='')}@{servers.HOST}:{port}/0?decode_responses=1",
        f"reddis://{USER}:{quote(PASSWORD, safe='')}@{servers.HOST}:{port}/0",
    ]
    for url in bad:
        for make in (RedisBackend, co.backend_from_url):
            with pytest.raises((co.ConfigurationError, ValueError)) as caught:
                make(url)
            assert_exception_clean(caught.value)


def test_memcached_url_with_credentials_is_refused() -> None:
    url = f"memcached://{USER}:{quote(PASSWORD, safe='')}@{servers.HOST}:11211"
    with pytest.raises(ValueError) as info:
        MemcachedBackend.from_url(url)
    assert_exception_clean(info.value)
    with pytest.raises(ValueError) as info:
        co.backend_from_url(url)
    assert_exception_clean(info.value)


# -- TLS --------------------------------------------------------------------------------------


async def test_tls_with_acl(tls_server: TLSRedisServer, certs: Certs) -> None:
    url = _url("rediss", tls_server.port)
    ca = str(certs.ca)
    async with RedisBackend(url, namespace=unique_namespace("tls"), ssl_ca_certs=ca) as backend:
        await _round_trip(backend)
        client = backend.client
        assert isinstance(client, aredis.Redis)
        conn = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:  # the connection really is TLS
            assert isinstance(conn._writer.get_extra_info("ssl_object"), ssl.SSLObject)
        finally:
            await client.connection_pool.release(conn)
        assert repr(backend).startswith(f"<RedisBackend rediss://{servers.HOST}:")
        assert_no_secret(repr(backend), "repr of a TLS backend")
    # the CA as a URL option, through backend_from_url
    from_url = f"{url}?ssl_ca_certs={quote(str(certs.ca))}&namespace=tls2"
    async with co.backend_from_url(from_url) as backend:
        assert backend.namespace == "tls2"
        await _round_trip(backend)


async def test_tls_refusals(tls_server: TLSRedisServer, certs: Certs) -> None:
    port = tls_server.port
    cases: list[tuple[str, str, dict[str, Any], type[Exception], str]] = [
        # a certificate from a CA we do not trust
        (
            "untrusted CA",
            _url("rediss", port),
            {"ssl_ca_certs": str(certs.other_ca)},
            co.BackendUnavailable,
            "CERTIFICATE_VERIFY_FAILED",
        ),
        # plaintext to a TLS-only port: refused, and quickly (never a hang)
        ("plaintext", _url("redis", port), {}, co.BackendUnavailable, ""),
        # TLS fine, credentials wrong
        (
            "wrong password",
            _url("rediss", port, password=WRONG),
            {"ssl_ca_certs": str(certs.ca)},
            co.BackendError,
            "refused the credentials",
        ),
    ]
    for what, url, options, error, text in cases:
        async with RedisBackend(url, timeout=2, **options) as backend:
            async with asyncio.timeout(10):
                with pytest.raises(error) as info:
                    await backend.get("k")
        assert text in str(info.value), (what, str(info.value))
        assert_exception_clean(info.value)


# -- pickle -----------------------------------------------------------------------------------

RAN: list[str] = []  # what the hostile pickle would append to, had it been loaded


def _pwned(marker: str) -> dict[str, Any]:
    RAN.append(marker)
    return {"id": 1, "name": "pwned"}


class _Exploit:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_pwned, ("code ran",))


def _hostile_pickle() -> bytes:
    body = pickle.dumps(_Exploit(), protocol=5)
    pickle.loads(body)  # the payload is live: loading it does run code
    assert RAN == ["code ran"]
    RAN.clear()
    return body


def _model(name: str, store: Backend, serializer: Any, **fields: Any) -> Any:
    attrs = {
        "__module__": __name__,
        "id": co.IntegerField(primary_key=True),
        "name": co.StringField(),
        **fields,
        "Meta": type("Meta", (), {"backend": store, "serializer": serializer}),
    }
    return type(name, (co.Model,), attrs)


def _pickled_model(store: Backend, serializer: Any) -> Any:
    return _model("Pickled", store, serializer, blob=co.BinaryField(default=b""))


async def test_signed_pickle_round_trips_and_rejects_tampering(backend: Backend) -> None:
    signer = PickleSerializer(secret_key=b"k" * 32)
    Pickled = _pickled_model(backend, signer)
    await Pickled.create(id=1, name="Sam", blob=b"\x00\xff")
    got = await Pickled.get(id=1)
    assert (got.name, got.blob) == ("Sam", b"\x00\xff")

    key = Pickled._schema.key((1,))
    stored = await backend.get(key)
    assert stored is not None
    head, tag, body = stored[:6], stored[6:38], stored[38:]
    assert pickle.loads(body)["name"] == "Sam"  # the body is the plain pickle, signed by tag
    hostile = _hostile_pickle()
    other_key = PickleSerializer(secret_key=b"another key").dumps({"id": 1, "name": "x"})
    forged = [
        head + tag + hostile,  # the genuine signature on a hostile body
        head + hostile,  # a plain, unsigned pickle
        head + bytes(32) + hostile,  # a zero signature
        head + tag + body[:-1] + bytes([body[-1] ^ 1]),  # one bit of the body flipped
        head + bytes([tag[0] ^ 1]) + tag[1:] + body,  # one bit of the signature flipped
        head + other_key,  # signed with another key
    ]
    for i, payload in enumerate(forged):
        await backend.set(key, payload)
        with pytest.raises(co.SerializationError) as info:
            await Pickled.get(id=1)
        assert info.value.key == key and info.value.model == "Pickled", i
        with pytest.raises(co.SerializationError):
            await Pickled.query_many(1)
        assert RAN == [], f"forged payload {i} was unpickled"
    # a hostile payload through update (read, merge, write) is refused too, and not replaced
    await backend.set(key, head + tag + hostile)
    with pytest.raises(co.SerializationError):
        await Pickled.update(id=1, name="x")
    assert await backend.get(key) == head + tag + hostile
    assert RAN == []
    await backend.delete(key)


async def test_pickle_preset_without_a_key_writes_nothing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    preset = co.registry.get_by_name("pickle")
    assert isinstance(preset, PickleSerializer) and preset.signed
    Pickled = _pickled_model(backend, "pickle")
    key = Pickled._schema.key((7,))
    writes: list[Callable[[], Awaitable[Any]]] = [
        lambda: Pickled.create(id=7, name="x"),
        lambda: Pickled.insert_many({"id": 7, "name": "x"}, {"id": 8, "name": "y"}),
        lambda: Pickled(id=7, name="x").save(force_insert=True),
    ]
    for write in writes:
        with pytest.raises(co.SerializationError) as info:
            await write()
        message = str(info.value)
        assert "secret key" in message and KEY_ENV_VAR in message, message
        assert await backend.get_many(key, Pickled._schema.key((8,))) == [None, None]
    # with the key configured through the environment, the same model works
    monkeypatch.setenv(KEY_ENV_VAR, "a key from the environment")
    await Pickled.create(id=7, name="x")
    assert (await Pickled.get(id=7)).name == "x"
    monkeypatch.delenv(KEY_ENV_VAR)
    with pytest.raises(co.SerializationError):  # and without it, reading is refused too
        await Pickled.get(id=7)
    await backend.delete(key)


# -- clear() stays in its namespace -----------------------------------------------------------

# Pairs that a careless prefix match or an unescaped glob would mix up.
NAMESPACE_PAIRS = [
    ("ns", "ns2"),
    ("a*", "ab"),
    ("x?", "xy"),
    ("[ab]", "a"),
    ("b\\", "b"),
    ("tenant 1", "tenant"),  # a space: memcached maps it, Redis keeps it
]
KEYS_PER_NAMESPACE = 1200  # more than one SCAN step (500) on Redis


@pytest.fixture(params=["redis", "redis-cluster", "memcached"])
def server_kind(request: pytest.FixtureRequest) -> str:
    _needs(str(request.param))
    return str(request.param)


def _backend_on(kind: str, request: pytest.FixtureRequest, namespace: str) -> Backend:
    if kind == "redis":
        return RedisBackend(request.getfixturevalue("redis_url"), namespace=namespace)
    if kind == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        return RedisBackend(url, cluster=True, namespace=namespace)
    return MemcachedBackend(request.getfixturevalue("memcached_servers"), namespace=namespace)


async def test_clear_never_touches_another_namespace(
    server_kind: str, request: pytest.FixtureRequest
) -> None:
    run = unique_namespace("clr")
    checked = 0
    for first, second in NAMESPACE_PAIRS:
        one = _backend_on(server_kind, request, f"{run}{first}")
        two = _backend_on(server_kind, request, f"{run}{second}")
        async with one, two:
            keys = [f"k{i}" for i in range(KEYS_PER_NAMESPACE)] + ["*", "?", "[a]", "\\", ":"]
            async with asyncio.timeout(60):
                await one.set_many({k: b"one" for k in keys})
                await two.set_many({k: b"two" for k in keys})
                await one.clear()
                assert await one.get_many(*keys) == [None] * len(keys)
                assert await two.get_many(*keys) == [b"two"] * len(keys), (first, second)
                # and the other way round
                await one.set_many({k: b"one" for k in keys})
                await two.clear()
                assert await two.get_many(*keys) == [None] * len(keys)
                assert await one.get_many(*keys) == [b"one"] * len(keys), (second, first)
                await one.clear()
            checked += 2 * len(keys)
    assert checked == 2 * len(NAMESPACE_PAIRS) * (KEYS_PER_NAMESPACE + 5)


async def test_model_namespaces_on_one_backend_are_separate(
    server_kind: str, request: pytest.FixtureRequest
) -> None:
    """``Meta.namespace`` adds a prefix under the backend's: same pks, separate rows, and a
    backend clear() of another namespace on the same server leaves both."""
    run = unique_namespace("mns")
    store = _backend_on(server_kind, request, run)
    other = _backend_on(server_kind, request, run + "x")
    async with store, other:

        def model(ns: str) -> Any:
            meta = type("Meta", (), {"backend": store, "serializer": "json", "namespace": ns})
            attrs = {
                "__module__": __name__,
                "id": co.IntegerField(primary_key=True),
                "v": co.StringField(),
                "Meta": meta,
            }
            return type(f"Row{ns}", (co.Model,), attrs)

        A, B = model("a"), model("b")
        await A.insert_many(*({"id": i, "v": f"a{i}"} for i in range(200)))
        await B.insert_many(*({"id": i, "v": f"b{i}"} for i in range(200)))
        await other.clear()
        assert [r.v for r in await A.query_many(*range(200))] == [f"a{i}" for i in range(200)]
        assert [r.v for r in await B.query_many(*range(200))] == [f"b{i}" for i in range(200)]
        await store.clear()
        assert await A.query_many(0, 199) == [None, None]


# -- a stored payload never picks its serializer ----------------------------------------------


class _CreatesFile:
    """Unpickling this creates a file (and records it): proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


async def test_a_json_model_never_unpickles_a_planted_payload(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app registers an unsigned pickle serializer (for an in-process model); bytes
    planted in the shared store, tagged as that serializer, must not make a JSON model's
    read unpickle them."""
    from acacheorm.cli import _ops

    unsafe = co.registry.register(
        "pickle-unsafe", PickleSerializer(unsafe_allow_unsigned=True, name="pickle-unsafe")
    )
    signed = co.registry.register(
        "pickle-other", PickleSerializer(secret_key=b"o" * 32, name="pickle-other")
    )
    loads_calls: list[int] = []
    real_loads = pickle.loads

    def spy(*args: Any, **kwargs: Any) -> Any:
        loads_calls.append(1)
        return real_loads(*args, **kwargs)

    monkeypatch.setattr(pickle, "loads", spy)
    try:
        Account = _model("Account", backend, "json", admin=co.BooleanField(default=False))
        schema = Account._schema
        account = await Account.create(id=1, name="Sam")
        key = schema.key((1,))
        marker = tmp_path / "pwned"
        hostile = pickle.dumps(_CreatesFile(marker), protocol=5)
        body = {"id": 1, "name": "Sam", "admin": True}
        planted = {
            "unsigned pickle": _codec.header(unsafe.tag, schema.fingerprint) + hostile,
            "unsigned, as a row": _codec.header(unsafe.tag, schema.fingerprint)
            + pickle.dumps(body),
            "the pickle preset's tag": _codec.header(3, schema.fingerprint) + hostile,
            "a signed pickle": _codec.header(signed.tag, schema.fingerprint) + signed.dumps(body),
            "msgpack": _codec.header(2, schema.fingerprint) + co.MsgpackSerializer().dumps(body),
        }
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "get": lambda: Account.get(id=1),
            "query_many": lambda: Account.query_many(1, 2),
            "update": lambda: Account.update(id=1, name="x"),
            "refresh": account.refresh,
            "get_or_create": lambda: Account.get_or_create(id=1, defaults={"name": "y"}),
            "co.query_many": lambda: co.query_many((Account, 1)),
        }
        tried = 0
        for what, payload in planted.items():
            await backend.set(key, payload)
            for how, read in reads.items():
                with pytest.raises(co.SerializationError, match="does not read") as info:
                    await read()
                assert (info.value.key, info.value.model) == (key, "Account"), (what, how)
                tried += 1
            # the inspection tool, given the model, refuses it as well, and without a model
            # it never loads an unsigned pickle
            with pytest.raises(_ops.OperationError, match="does not read"):
                await _ops.inspect_key(backend, key, Account)
            if payload[2:4] == unsafe.tag.to_bytes(2, "big"):
                with pytest.raises(_ops.OperationError, match="unsigned pickle"):
                    await _ops.inspect_key(backend, key)
            assert await backend.get(key) == payload, f"{what}: the planted row was rewritten"
        assert tried == len(planted) * len(reads)
        assert loads_calls == [] and not marker.exists(), "a planted pickle was loaded"
        # the spy works: the unsigned serializer does unpickle when asked directly
        unsafe.loads(pickle.dumps({"id": 1}))
        assert loads_calls == [1]
    finally:
        co.registry.unregister("pickle-unsafe")
        co.registry.unregister("pickle-other")


# Namespaces that a plain "<namespace>:<key>" would mix up: the first with the key
# "<rest>:<key>" is the second with "<key>".
ALIASING_NAMESPACES = [("app", "app:sessions"), ("x\\", "x\\:y"), ("a:b", "a:b:c")]


async def test_namespaces_never_alias(backend_factory: Any) -> None:
    run = unique_namespace("alias")
    tried = 0
    for short, long in ALIASING_NAMESPACES:
        rest = long[len(short) + 1 :]
        one = backend_factory(run + short)
        two = backend_factory(run + long)
        async with one, two:
            await two.set("tok1", b"long")
            await one.set(f"{rest}:tok1", b"short")
            assert await two.get("tok1") == b"long", (short, long)
            assert await one.get(f"{rest}:tok1") == b"short", (short, long)
            try:
                assert [k async for k in two.scan()] == ["tok1"]
                assert [k async for k in one.scan()] == [f"{rest}:tok1"]
            except NotImplementedError:
                pass
            await one.clear()  # the shorter namespace's clear() leaves the longer alone
            assert await two.get("tok1") == b"long", (short, long)
            assert await one.get(f"{rest}:tok1") is None
            await one.set(f"{rest}:tok1", b"short")
            await two.clear()
            assert await one.get(f"{rest}:tok1") == b"short"
            await one.clear()
            tried += 1
    assert tried == len(ALIASING_NAMESPACES)
