"""Serializers: round trips, strictness, signed pickles, protobuf mapping, the registry."""

from __future__ import annotations

import concurrent.futures
import hmac
import math
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import acacheorm.serializers.msgpack as msgpack_module
from acacheorm._exceptions import ConfigurationError, SerializationError
from acacheorm.serializers import (
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    ProtobufSerializer,
    Serializer,
    SerializerRegistry,
    derive_tag,
    registry,
)
from acacheorm.serializers.pickle import KEY_ENV_VAR
from tests.protos import Address, Everything, Legacy, Node

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


# -- helpers --------------------------------------------------------------------------------


def assert_same(expected: Any, actual: Any, path: str = "$") -> None:
    """Equal values of identical types all the way down (so 1, 1.0 and True differ, -0.0 is
    not 0.0, NaN equals NaN, and dict key order is ignored)."""
    assert type(actual) is type(expected), (
        f"{path}: {type(expected).__name__} {expected!r} came back as "
        f"{type(actual).__name__} {actual!r}"
    )
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r} is not NaN"
        else:
            assert struct.pack("<d", expected) == struct.pack("<d", actual), (
                f"{path}: {expected!r} != {actual!r}"
            )
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {set(expected)} != {set(actual)}"
        for key in expected:
            assert_same(expected[key], actual[key], f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: length {len(expected)} != {len(actual)}"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {expected!r} != {actual!r}"


def nested(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )


def rows(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(max_size=12), nested(scalars), max_size=9)


COMMON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()  # NaN, infinities and -0.0 included
    | st.text(max_size=20)
)
JSON_ROWS = rows(COMMON_SCALARS | st.integers(min_value=-(10**300), max_value=10**300))
BINARY_ROWS = rows(
    COMMON_SCALARS
    | st.binary(max_size=20)
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
)

USER = {
    "id": 1,
    "name": "Sam",
    "height": 1.78,
    "married": False,
    "gender": 1,
    "email": None,
    "phones": ["+1 555 0100", "+1 555 0101"],
    "created_at": "2024-05-01T12:00:00+00:00",
    "avatar": b"\x89PNG\r\n",
}


def signed() -> PickleSerializer:
    return PickleSerializer(secret_key=KEY)


# A payload whose unpickling calls _pwn(): proof of whether anything was unpickled.
EVIDENCE: list[str] = []


def _pwn() -> dict[str, Any]:
    EVIDENCE.append("unpickled")
    return {"pwned": True}


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_pwn, ())


EVIL_BODY = pickle.dumps(_Evil(), protocol=5)


@pytest.fixture
def evidence() -> list[str]:
    EVIDENCE.clear()
    return EVIDENCE


# -- JSON -----------------------------------------------------------------------------------


@given(JSON_ROWS)
def test_json_round_trips_primitive_rows(row: dict[str, Any]) -> None:
    s = JSONSerializer()
    assert_same(row, s.loads(s.dumps(row)))


def test_json_is_compact_utf8_and_not_binary() -> None:
    s = JSONSerializer()
    assert s.binary is False
    assert s.name == "json"
    assert s.tag == 1
    assert s.dumps({"a": "é", "b": [1, 2.5, None, True]}) == (
        '{"a":"é","b":[1,2.5,null,true]}'.encode()
    )


def test_json_keeps_nan_and_infinities() -> None:
    s = JSONSerializer()
    out = s.loads(s.dumps({"n": math.nan, "p": math.inf, "m": -math.inf, "z": -0.0}))
    assert math.isnan(out["n"])
    assert out["p"] == math.inf and out["m"] == -math.inf
    assert math.copysign(1.0, out["z"]) == -1.0


def test_json_turns_tuples_into_lists() -> None:
    s = JSONSerializer()
    assert s.loads(s.dumps({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}


@pytest.mark.parametrize(
    "row",
    [{"b": b"bytes"}, {"o": object()}, {"s": "\udc80"}, {"big": 10**5000}, {"s": {1, 2}}],
    ids=["bytes", "object", "lone-surrogate", "int-beyond-str-limit", "set"],
)
def test_json_refuses_values_it_cannot_hold(row: dict[str, Any]) -> None:
    with pytest.raises(SerializationError, match="json cannot encode") as info:
        JSONSerializer().dumps(row)
    assert info.value.__cause__ is not None


def test_json_refuses_a_circular_row() -> None:
    row: dict[str, Any] = {}
    row["self"] = row
    with pytest.raises(SerializationError):
        JSONSerializer().dumps(row)


def test_json_rows_are_dicts() -> None:
    with pytest.raises(SerializationError, match="a row is a dict"):
        JSONSerializer().dumps([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [b"", b"[1,2]", b'"s"', b"null", b"{", b'{"a":1} x', b'{"a":"\xff"}', b"\xff\xfe{}"],
)
def test_json_rejects_invalid_or_non_object_payloads(payload: bytes) -> None:
    with pytest.raises(SerializationError, match="invalid json payload"):
        JSONSerializer().loads(payload)


# -- msgpack --------------------------------------------------------------------------------


@given(BINARY_ROWS)
def test_msgpack_round_trips_primitive_rows_with_bytes_and_big_ints(row: dict[str, Any]) -> None:
    s = MsgpackSerializer()
    assert_same(row, s.loads(s.dumps(row)))


def test_msgpack_is_binary_and_matches_plain_msgpack() -> None:
    s = MsgpackSerializer()
    assert (s.name, s.tag, s.binary) == ("msgpack", 2, True)
    # interoperable: any msgpack reader sees the same map
    assert s.dumps(USER) == msgpack.packb(USER, use_bin_type=True)
    assert_same(USER, s.loads(msgpack.packb(USER, use_bin_type=True)))


@pytest.mark.parametrize(
    "number",
    [2**64 - 1, -(2**63), 2**64, -(2**63) - 1, 10**100, -(10**100), 2**1000],
)
def test_msgpack_keeps_every_int_exact(number: int) -> None:
    s = MsgpackSerializer()
    payload = s.dumps({"n": number, "nested": [number, {"x": number}]})
    assert_same({"n": number, "nested": [number, {"x": number}]}, s.loads(payload))
    if -(2**63) <= number <= 2**64 - 1:  # native msgpack ints: the plain encoding
        assert payload == msgpack.packb({"n": number, "nested": [number, {"x": number}]})
    else:  # beyond 64 bits: an extension type, code 1
        assert msgpack.unpackb(payload)["n"] == msgpack.ExtType(
            1, number.to_bytes((number.bit_length() + 8) // 8, "big", signed=True)
        )


def test_msgpack_turns_tuples_into_lists() -> None:
    s = MsgpackSerializer()
    assert_same({"t": [1, [2, b"x"]]}, s.loads(s.dumps({"t": (1, (2, b"x"))})))


@pytest.mark.parametrize(
    "row", [{"o": object()}, {"s": "\udc80"}, {"deep": {"x": {1, 2}}}, {"big": [2**70, object()]}]
)
def test_msgpack_refuses_values_it_cannot_hold_and_stays_usable(row: dict[str, Any]) -> None:
    s = MsgpackSerializer()
    with pytest.raises(SerializationError, match="msgpack cannot encode") as info:
        s.dumps(row)
    assert info.value.__cause__ is not None
    # the per-thread packer's buffer was reset: the next row is not polluted by the failed one
    assert s.dumps({"ok": 1}) == msgpack.packb({"ok": 1})


def test_msgpack_rows_are_dicts() -> None:
    with pytest.raises(SerializationError, match="a row is a dict"):
        MsgpackSerializer().dumps([1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb({b"name": 1}, use_bin_type=True),  # a bytes key at the top
        msgpack.packb({"a": 1, b"b": b"x"}, use_bin_type=True),
        msgpack.packb({b"k" * 300: 1}, use_bin_type=True),  # bin16 key
        msgpack.packb({"a": 1, b"k" * 70_000: 1}, use_bin_type=True),  # bin32 key
        msgpack.packb({1: "x"}),  # an int key
        msgpack.packb({"a": {2: 3}}),  # int key nested: refused by strict_map_key
        msgpack.packb([1, 2]),
        msgpack.packb("str"),
        msgpack.packb({"e": msgpack.ExtType(7, b"x")}),  # unknown extension
        msgpack.packb({"a": 1}) + b"\x00",  # trailing data
        b"",
        b"\xc1",  # never-used type byte
        b"\x81\xa1a\xa3\xff\xfe\xfd",  # str with invalid UTF-8
    ],
)
def test_msgpack_rejects_invalid_payloads(payload: bytes) -> None:
    with pytest.raises(SerializationError, match="invalid msgpack payload"):
        MsgpackSerializer().loads(payload)


def test_msgpack_accepts_bytes_values_under_str_keys() -> None:
    # the bin marker occurs in the payload, so the key scan runs and must pass
    s = MsgpackSerializer()
    assert s.loads(s.dumps({"a": b"\xc4\xc5\xc6", "b": {"c": b""}})) == {
        "a": b"\xc4\xc5\xc6",
        "b": {"c": b""},
    }


def test_msgpack_packers_are_not_shared_between_threads() -> None:
    s = MsgpackSerializer()

    def work(worker: int) -> bool:
        for i in range(2000):
            row = {"w": worker, "i": i, "pad": "x" * (i % 50), "b": bytes([worker]) * (i % 7)}
            if s.loads(s.dumps(row)) != row:
                return False
        return True

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(4)))


def test_msgpack_missing_driver_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # makes `import msgpack` fail
    monkeypatch.setattr(msgpack_module, "_msgpack", None)
    monkeypatch.setattr(msgpack_module, "_unpackb", None)
    monkeypatch.setattr(msgpack_module, "_local", threading.local())
    s = MsgpackSerializer()  # building it never needs the driver
    with pytest.raises(ConfigurationError, match=r"pip install 'acacheorm\[msgpack\]'"):
        s.dumps({"a": 1})
    with pytest.raises(ConfigurationError, match=r"acacheorm\[msgpack\]"):
        s.loads(b"\x80")


def test_importing_serializers_imports_no_optional_driver() -> None:
    code = (
        "import sys, acacheorm.serializers as s\n"
        "assert 'msgpack' not in sys.modules, 'msgpack imported eagerly'\n"
        "assert 'google.protobuf' not in sys.modules, 'protobuf imported eagerly'\n"
        "m = s.registry.get_by_name('msgpack')\n"
        "assert m.loads(m.dumps({'a': 1})) == {'a': 1}\n"
        "assert 'msgpack' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# -- pickle ---------------------------------------------------------------------------------


@given(BINARY_ROWS)
def test_pickle_round_trips_primitive_rows(row: dict[str, Any]) -> None:
    s = signed()
    assert_same(row, s.loads(s.dumps(row)))


@pytest.mark.parametrize("size", [32, 16])
def test_pickle_payload_is_an_hmac_tag_then_the_pickle(size: int) -> None:
    s = PickleSerializer(secret_key=KEY, digest_size=size)  # type: ignore[arg-type]
    payload = s.dumps(USER)
    tag, body = payload[:size], payload[size:]
    assert pickle.loads(body) == USER
    assert body[:2] == b"\x80\x05"  # protocol 5
    assert len(tag) == size
    # the tag is not a plain HMAC of the body with the raw key (the key is domain-separated)
    assert tag != hmac.digest(KEY, body, "sha256")[:size]
    assert s.loads(payload) == USER


def test_pickle_rejects_an_unsigned_payload_without_unpickling_it(evidence: list[str]) -> None:
    with pytest.raises(SerializationError, match="not unpickled"):
        signed().loads(EVIL_BODY)
    assert evidence == []
    # control: the same bytes do run code when loaded unsigned, so the check above matters
    assert PickleSerializer(unsafe_allow_unsigned=True).loads(EVIL_BODY) == {"pwned": True}
    assert evidence == ["unpickled"]


def test_pickle_rejects_a_tampered_body_without_unpickling_it(evidence: list[str]) -> None:
    s = signed()
    genuine = s.dumps({"role": "user"})
    with pytest.raises(SerializationError, match="signature"):
        s.loads(genuine[:32] + EVIL_BODY)  # a genuine tag, a swapped body
    assert evidence == []


@pytest.mark.parametrize("position", [0, 31, 32, -1])
def test_pickle_rejects_any_flipped_bit(position: int) -> None:
    s = signed()
    payload = bytearray(s.dumps(USER))
    payload[position] ^= 0x01
    with pytest.raises(SerializationError, match="signature"):
        s.loads(bytes(payload))


def test_pickle_rejects_a_payload_signed_with_another_key(evidence: list[str]) -> None:
    evil = PickleSerializer(secret_key=OTHER_KEY)
    payload = evil.dumps({"x": _Evil()})
    assert evil.loads(payload) == {"x": {"pwned": True}}  # control: it runs under its own key
    assert evidence == ["unpickled"]
    evidence.clear()
    with pytest.raises(SerializationError, match="signature"):
        signed().loads(payload)
    assert evidence == []


@pytest.mark.parametrize("payload", [b"", b"\x00" * 31, b"\x00" * 32])
def test_pickle_rejects_payloads_too_short_to_be_signed(payload: bytes) -> None:
    with pytest.raises(SerializationError):
        signed().loads(payload)


def test_pickle_without_a_key_refuses_and_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, evidence: list[str]
) -> None:
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    for s in (PickleSerializer(), registry.get_by_name("pickle")):
        with pytest.raises(SerializationError) as info:
            s.dumps({"a": 1})
        message = str(info.value)
        assert KEY_ENV_VAR in message
        assert "secret_key" in message
        assert "unsafe_allow_unsigned" in message
        assert "runs code" in message
        with pytest.raises(SerializationError, match=KEY_ENV_VAR):
            s.loads(EVIL_BODY)
    assert evidence == []


def test_pickle_reads_the_env_key_at_use_time(monkeypatch: pytest.MonkeyPatch) -> None:
    s = PickleSerializer()
    monkeypatch.setenv(KEY_ENV_VAR, "first key")
    payload = s.dumps({"a": 1})
    assert s.loads(payload) == {"a": 1}
    # the same key given explicitly verifies it: str keys are their UTF-8 bytes
    assert PickleSerializer(secret_key=b"first key").loads(payload) == {"a": 1}
    monkeypatch.setenv(KEY_ENV_VAR, "second key")
    with pytest.raises(SerializationError, match="signature"):
        s.loads(payload)
    monkeypatch.setenv(KEY_ENV_VAR, "first key")
    assert s.loads(payload) == {"a": 1}


def test_pickle_key_rotation() -> None:
    old, new = b"old key", b"new key"
    written_before = PickleSerializer(secret_key=old).dumps({"v": 1})
    rotated = PickleSerializer(secret_key=new, fallback_keys=[old])
    assert rotated.loads(written_before) == {"v": 1}
    written_after = rotated.dumps({"v": 2})
    assert PickleSerializer(secret_key=new).loads(written_after) == {"v": 2}  # signed with new
    with pytest.raises(SerializationError):
        PickleSerializer(secret_key=old).loads(written_after)
    with pytest.raises(SerializationError):
        PickleSerializer(secret_key=new).loads(written_before)  # old key dropped


def test_pickle_unsafe_mode_writes_plain_pickles() -> None:
    s = PickleSerializer(unsafe_allow_unsigned=True)
    payload = s.dumps(USER)
    assert pickle.loads(payload) == USER
    assert payload[:2] == b"\x80\x05"
    assert s.loads(payload) == USER
    assert s.signed is False and signed().signed is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (pickle.dumps([1, 2]), "a dict was expected, got list"),
        (pickle.dumps({1: "a"}), "keys must be str, got int"),
        (b"not a pickle", "invalid pickle payload"),
        (b"\x80\x05K", "invalid pickle payload"),
    ],
)
def test_pickle_rejects_non_dicts_and_garbage(body: bytes, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        PickleSerializer(unsafe_allow_unsigned=True).loads(body)


def test_pickle_refuses_unpicklable_values() -> None:
    with pytest.raises(SerializationError, match="pickle cannot encode"):
        signed().dumps({"f": lambda: None})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret_key": KEY, "unsafe_allow_unsigned": True},
        {"fallback_keys": [KEY]},
        {"secret_key": b""},
        {"secret_key": KEY, "fallback_keys": [""]},
        {"secret_key": KEY, "digest_size": 20},
    ],
)
def test_pickle_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PickleSerializer(**kwargs)


def test_pickle_repr_never_shows_the_key() -> None:
    text = repr(PickleSerializer(secret_key="hunter2-secret", fallback_keys=["old-secret"]))
    assert "hunter2" not in text and "old-secret" not in text
    assert "***" in text


def test_pickle_named_instance_gets_its_own_tag() -> None:
    s = PickleSerializer(secret_key=KEY, name="pickle.sessions")
    assert s.name == "pickle.sessions"
    assert s.tag == derive_tag("pickle.sessions") != 3


# -- corrupt payloads, every serializer -----------------------------------------------------


def _all_serializers() -> list[Serializer]:
    return [
        JSONSerializer(),
        MsgpackSerializer(),
        signed(),
        PickleSerializer(unsafe_allow_unsigned=True),
        ProtobufSerializer(Everything),
    ]


# (not the unsigned pickle: random opcodes may import and call anything, which is the point)
@pytest.mark.parametrize(
    "s",
    [s for s in _all_serializers() if not isinstance(s, PickleSerializer) or s.signed],
    ids=repr,
)
@given(payload=st.binary(max_size=64))
def test_random_bytes_decode_to_a_dict_or_raise_serialization_error(
    s: Serializer, payload: bytes
) -> None:
    try:
        data = s.loads(payload)
    except SerializationError:
        return
    assert type(data) is dict
    assert all(type(k) is str for k in data)


TRUNCATION_ROW = {"i64": 2**40, "text": "hello world", "blob": b"\x00" * 5, "tags": ["a", "b"]}


@pytest.mark.parametrize("s", _all_serializers(), ids=repr)
def test_truncated_payloads_are_serialization_errors(s: Serializer) -> None:
    row = TRUNCATION_ROW if s.binary else {**TRUNCATION_ROW, "blob": "AAAAAAA="}
    payload = s.dumps(row)
    # Protobuf itself has no framing (a cut between two fields is a valid, shorter message):
    # the serializer prefixes the body with its length, so every cut must fail here too.
    for cut in range(len(payload)):
        with pytest.raises(SerializationError):
            s.loads(payload[:cut])
    if isinstance(s, ProtobufSerializer):
        with pytest.raises(SerializationError):
            s.loads(payload + b"\x00")


@pytest.mark.parametrize("s", _all_serializers(), ids=repr)
def test_dumps_many_and_loads_many(s: Serializer) -> None:
    batch = [{"text": str(i), "i64": i} for i in range(5)]
    payloads = s.dumps_many(batch)
    assert payloads == [s.dumps(row) for row in batch]
    decoded = s.loads_many(payloads)
    assert [{"text": d["text"], "i64": d["i64"]} for d in decoded] == batch
    with pytest.raises(SerializationError):
        s.loads_many([payloads[0], b"\xff\xff\xff", payloads[1]])


# -- protobuf -------------------------------------------------------------------------------

PROTO_FULL: dict[str, Any] = {
    "i32": -(2**31),
    "i64": 2**63 - 1,
    "u32": 2**32 - 1,
    "u64": 2**64 - 1,
    "s64": -(2**63),
    "f64": 3,
    "dbl": -0.0,
    "flt": 0.25,
    "flag": True,
    "text": "zoë ✓",
    "blob": b"\x00\xff",
    "color": 2,
    "nickname": "",
    "score": 0,
    "avatar": b"",
    "active": False,
    "email": "",
    "visits": 0,
    "ratio": 0.0,
    "verified": False,
    "thumb": b"",
    "weight": 1.5,
    "tags": ["a", ""],
    "numbers": [1, -1, 2**62],
    "addresses": [{"city": "X", "zip": None}, {"city": "", "zip": 0}],
    "chunks": [b"a", b""],
    "home": {"city": "Y", "zip": 75001},
    "extra": {"a": 1, "b": [1.5, None, True, "x", {"c": {}}], "d": -0.0, "e": []},
    "anything": [1, "a", None],
    "items": [None, 2.5, "s"],
    "counts": {"a": 1, "": -(2**63)},
    "places": {"home": {"city": "Z", "zip": 5}},
    "phone": "123",
    "fax": None,
    "aliases": ["x", ""],
    "tree": {"label": "r", "children": [{"label": "c", "children": []}]},
    "slots": {1: None, -2: "x", 3: {"k": [True]}},
    "values": [None, 1, {"a": []}],
}


def test_protobuf_round_trips_every_kind_of_field() -> None:
    s = ProtobufSerializer(Everything)
    assert_same(PROTO_FULL, s.loads(s.dumps(PROTO_FULL)))


def test_protobuf_payload_is_the_length_delimited_message() -> None:
    # The standard delimited form (writeDelimitedTo/parseDelimitedFrom): varint length + body.
    from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]

    s = ProtobufSerializer(Everything)
    payload = s.dumps(PROTO_FULL)
    size, start = _DecodeVarint(payload, 0)
    assert size == len(payload) - start
    msg = Everything.FromString(payload[start:])
    assert msg.text == "zoë ✓"
    assert msg.HasField("nickname") and msg.nickname == ""
    assert msg.HasField("email") and msg.email.value == ""
    assert msg.WhichOneof("contact") == "phone"
    assert list(msg.addresses)[1] == Address(city="", zip=0)


def test_protobuf_empty_row_reads_back_defaults_and_none() -> None:
    s = ProtobufSerializer(Everything)
    out = s.loads(s.dumps({}))
    assert s.dumps({}) == b"\x00"
    with pytest.raises(SerializationError):
        s.loads(b"")
    assert_same(
        {
            **{k: 0 for k in ("i32", "i64", "u32", "u64", "s64", "f64", "color")},
            "dbl": 0.0,
            "flt": 0.0,
            "flag": False,
            "text": "",
            "blob": b"",
            **{k: None for k in ("nickname", "score", "avatar", "active", "home", "tree")},
            **{k: None for k in ("email", "visits", "ratio", "verified", "thumb", "weight")},
            **{k: None for k in ("extra", "anything", "items", "phone", "fax")},
            **{k: [] for k in ("tags", "numbers", "addresses", "chunks", "aliases", "values")},
            **{k: {} for k in ("counts", "places", "slots")},
        },
        out,
    )


@pytest.mark.parametrize(
    ("field", "empty"),
    [
        ("nickname", ""),
        ("score", 0),
        ("avatar", b""),
        ("active", False),
        ("email", ""),
        ("visits", 0),
        ("verified", False),
        ("home", {"city": "", "zip": None}),
        ("extra", {}),
        ("items", []),
        ("anything", 0),
        ("phone", ""),
    ],
)
def test_protobuf_none_and_empty_stay_distinct_for_fields_with_presence(
    field: str, empty: Any
) -> None:
    s = ProtobufSerializer(Everything)
    none_payload = s.dumps({field: None})
    assert none_payload == s.dumps({})  # None leaves the field unset
    assert s.loads(none_payload)[field] is None
    assert_same(empty, s.loads(s.dumps({field: empty}))[field])


@pytest.mark.parametrize("field", ["i32", "text", "blob", "flag", "color", "dbl", "tags", "counts"])
def test_protobuf_none_without_presence_is_an_error(field: str) -> None:
    with pytest.raises(SerializationError, match=rf"field {field}:.*None.*presence"):
        ProtobufSerializer(Everything).dumps({field: None})


def test_protobuf_unknown_field_is_named() -> None:
    with pytest.raises(SerializationError, match="unknown field 'nope'"):
        ProtobufSerializer(Everything).dumps({"text": "x", "nope": 1})
    with pytest.raises(SerializationError, match=r"field home: unknown field 'street'"):
        ProtobufSerializer(Everything).dumps({"home": {"street": "x"}})


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"i32": "1"}, r"field i32: expected an int for int32, got str"),
        ({"i32": True}, "expected an int"),
        ({"i32": 1.0}, "expected an int"),
        ({"i32": 2**31}, "out of range for int32"),
        ({"u32": -1}, "out of range for uint32"),
        ({"u64": 2**64}, "out of range for uint64"),
        ({"s64": -(2**63) - 1}, "out of range for sint64"),
        ({"flag": 1}, "expected a bool"),
        ({"text": b"x"}, "expected a str"),
        ({"text": "\udc80"}, r"field text:.*surrogate"),
        ({"blob": "x"}, "expected bytes"),
        ({"dbl": "1.5"}, "expected a float"),
        ({"dbl": 2**53 + 1}, "cannot be stored exactly in a double"),
        ({"flt": 0.1}, "32-bit float"),
        ({"flt": 1e300}, "32-bit float"),
        ({"weight": 0.1}, r"field weight: .*32-bit float"),
        ({"color": "RED"}, "expected an int for enum"),
        ({"email": 5}, r"field email: expected a str"),
        ({"visits": "5"}, "expected an int"),
        ({"home": "Paris"}, "expected a dict for message acacheorm_test.Address"),
        ({"home": {"zip": "75001"}}, r"field home\.zip: expected an int"),
        ({"tags": "abc"}, "expected a list for a repeated field"),
        ({"tags": ["a", 1]}, r"field tags\[1\]: expected a str"),
        ({"tags": ["a", None]}, r"field tags\[1\]: expected a str, got NoneType"),
        ({"addresses": [{"city": "a"}, None]}, r"addresses\[1\]: None cannot be an element"),
        ({"addresses": [{"city": 1}]}, r"addresses\[0\]\.city: expected a str"),
        ({"aliases": [None]}, r"aliases\[0\]: None cannot be an element"),
        ({"counts": {"a": "1"}}, r"counts\['a'\]: expected an int"),
        ({"counts": {1: 1}}, r"counts\[1\]: expected a str"),
        ({"counts": ["a"]}, "expected a dict for a map field"),
        ({"places": {"x": None}}, r"places\['x'\]: None cannot be a map value"),
        ({"slots": {"1": None}}, r"slots\['1'\]: expected an int for int32"),
        ({"extra": [1]}, "expected a dict for google.protobuf.Struct"),
        ({"extra": {"a": {"b": b"x"}}}, r"extra\['a'\]\['b'\]: .*not bytes"),
        ({"extra": {1: "x"}}, "Struct keys are str"),
        ({"anything": 2**53 + 1}, "beyond 2\\*\\*53"),
        ({"anything": object()}, "google.protobuf.Value holds"),
        ({"items": {"a": 1}}, "expected a list for google.protobuf.ListValue"),
        ({"items": [1, b"x"]}, r"items\[1\]: .*not bytes"),
        ({"phone": "1", "fax": "2"}, "phone, fax are all members of oneof 'contact'"),
        ({"tree": {"children": [{"children": [{"label": 3}]}]}}, r"tree\.children\[0\]"),
    ],
)
def test_protobuf_refuses_values_the_message_cannot_hold(row: dict[str, Any], message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        ProtobufSerializer(Everything).dumps(row)


def test_protobuf_struct_numbers_are_doubles() -> None:
    s = ProtobufSerializer(Everything)
    out = s.loads(s.dumps({"extra": {"i": 2**53, "two": 2.0, "half": 2.5, "neg0": -0.0}}))
    # documented: the format cannot tell 2.0 from 2, integral numbers read back as int
    assert_same({"i": 2**53, "two": 2, "half": 2.5, "neg0": -0.0}, out["extra"])
    out = s.loads(s.dumps({"anything": 1e300}))
    assert_same(1e300, out["anything"])  # integral but beyond 2**53: stays a float


def test_protobuf_int_into_double_reads_back_as_float() -> None:
    s = ProtobufSerializer(Everything)
    assert_same(3.0, s.loads(s.dumps({"dbl": 3}))["dbl"])


def test_protobuf_open_enum_keeps_unknown_numbers() -> None:
    s = ProtobufSerializer(Everything)
    assert s.loads(s.dumps({"color": 7}))["color"] == 7


def test_protobuf_proto2_presence_required_and_closed_enum() -> None:
    s = ProtobufSerializer(Legacy)
    # an unset optional with a declared default still reads back as None, not "anon"
    assert s.loads(s.dumps({"id": 1})) == {"id": 1, "name": None, "level": None, "marks": []}
    assert s.loads(s.dumps({"id": 2, "name": "anon", "level": 2})) == {
        "id": 2,
        "name": "anon",
        "level": 2,
        "marks": [],
    }
    with pytest.raises(SerializationError, match="missing required fields: id"):
        s.dumps({"name": "x"})
    with pytest.raises(SerializationError, match="missing required fields"):
        s.dumps({"id": None})
    with pytest.raises(SerializationError, match="not a value of the closed enum"):
        s.dumps({"id": 1, "level": 5})
    with pytest.raises(SerializationError, match="required"):
        s.loads(b"\x00")  # a (framed) empty message: the required field is missing


def test_protobuf_dumps_is_deterministic_for_maps() -> None:
    s = ProtobufSerializer(Everything)
    keys = [f"k{i}" for i in range(50)]
    forward = s.dumps({"counts": {k: 1 for k in keys}, "extra": {k: 1 for k in keys}})
    backward = s.dumps(
        {"counts": {k: 1 for k in reversed(keys)}, "extra": {k: 1 for k in reversed(keys)}}
    )
    assert forward == backward


def test_protobuf_reads_what_a_newer_schema_wrote() -> None:
    # Address has fields 1-2; a writer with an extra field 9 (string) is ignored, not an error
    body = Address(city="X").SerializeToString() + b"\x4a\x03new"
    payload = bytes([len(body)]) + body
    assert ProtobufSerializer(Address).loads(payload) == {"city": "X", "zip": None}


def test_protobuf_name_and_tag() -> None:
    s = ProtobufSerializer(Everything)
    assert s.name == "protobuf.acacheorm_test.Everything"
    assert s.tag == derive_tag(s.name) >= 0x8000
    assert s.binary is True
    named = ProtobufSerializer(Node, name="protobuf.node")
    assert (named.name, named.tag) == ("protobuf.node", derive_tag("protobuf.node"))
    assert repr(named) == "ProtobufSerializer(Node, name='protobuf.node')"


@pytest.mark.parametrize("bad", [Everything(), dict, "acacheorm_test.Everything"])
def test_protobuf_needs_a_message_class(bad: Any) -> None:
    with pytest.raises(TypeError, match="protobuf message class"):
        ProtobufSerializer(bad)


@pytest.mark.parametrize(
    "payload",
    [b"\x52\x01\xff", b"\xff\xff\xff\xff", b"\x52\x05ab", b"\x0f", "text"],
    ids=["bad-utf8", "bad-tag", "short-string", "bad-wire-type", "str-payload"],
)
def test_protobuf_rejects_corrupt_payloads(payload: Any) -> None:
    with pytest.raises(SerializationError, match="invalid protobuf payload"):
        ProtobufSerializer(Everything).loads(payload)


def test_protobuf_missing_library_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'acacheorm\[protobuf\]'"):
        ProtobufSerializer(Everything)


PROTO_SCALARS = st.fixed_dictionaries(
    {},
    optional={
        "i32": st.integers(-(2**31), 2**31 - 1),
        "i64": st.integers(-(2**63), 2**63 - 1),
        "u64": st.integers(0, 2**64 - 1),
        "dbl": st.floats(),
        "flt": st.floats(width=32),
        "flag": st.booleans(),
        "text": st.text(),
        "blob": st.binary(),
        "nickname": st.none() | st.text(),
        "score": st.none() | st.integers(-(2**63), 2**63 - 1),
        "email": st.none() | st.text(),
        "visits": st.none() | st.integers(-(2**63), 2**63 - 1),
        "tags": st.lists(st.text(), max_size=4),
        "chunks": st.lists(st.binary(max_size=8), max_size=4),
        "counts": st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1)),
        "home": st.none()
        | st.fixed_dictionaries({"city": st.text(), "zip": st.none() | st.integers(0, 99999)}),
        "values": st.lists(
            nested(
                st.none()
                | st.booleans()
                | st.text(max_size=5)
                | st.floats().filter(lambda f: not f.is_integer())
            ),
            max_size=4,
        ),
    },
)


@given(PROTO_SCALARS)
def test_protobuf_round_trips_generated_rows(row: dict[str, Any]) -> None:
    s = ProtobufSerializer(Everything)
    out = s.loads(s.dumps(row))
    assert set(out) == {f.name for f in Everything.DESCRIPTOR.fields}
    for key, value in row.items():
        assert_same(value, out[key], key)


# -- registry -------------------------------------------------------------------------------


def test_presets_are_registered() -> None:
    assert {"json", "msgpack", "pickle"} <= set(registry.names())
    assert isinstance(registry.get_by_name("json"), JSONSerializer)
    assert isinstance(registry.get_by_name("msgpack"), MsgpackSerializer)
    assert isinstance(registry.get_by_name("pickle"), PickleSerializer)
    for name, tag in {"json": 1, "msgpack": 2, "pickle": 3}.items():
        assert registry.get_by_name(name).tag == tag
        assert registry.get_by_tag(tag) is registry.get_by_name(name)


def test_register_get_by_tag_and_unregister_on_the_global_registry() -> None:
    s = ProtobufSerializer(Everything)
    assert registry.register("protobuf.everything", s) is s
    try:
        assert registry.get_by_name("protobuf.everything") is s
        assert registry.get_by_tag(s.tag) is s
        assert "protobuf.everything" in registry
    finally:
        registry.unregister("protobuf.everything")
    assert "protobuf.everything" not in registry
    assert registry.get_by_tag(s.tag) is None


def test_unknown_name_lists_the_known_ones() -> None:
    reg = SerializerRegistry()
    reg.register("json", JSONSerializer())
    reg.register("msgpack", MsgpackSerializer())
    with pytest.raises(
        KeyError, match="no serializer is registered as 'yaml'; known: json, msgpack"
    ):
        reg.get_by_name("yaml")
    with pytest.raises(KeyError, match="known: json, msgpack"):
        reg.unregister("yaml")


def test_register_needs_an_instance() -> None:
    reg = SerializerRegistry()
    with pytest.raises(TypeError, match=r"did you mean JSONSerializer\(\)"):
        reg.register("json", JSONSerializer)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Serializer instance"):
        reg.register("json", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty str"):
        reg.register("", JSONSerializer())
    assert reg.names() == []


def test_tag_collisions_are_refused() -> None:
    reg = SerializerRegistry()
    first = reg.register("json", JSONSerializer())
    with pytest.raises(ValueError, match=r"tag 0x0001 is already used by .* registered as 'json'"):
        reg.register("json2", JSONSerializer())
    # the same instance under a second name is fine: payloads still map to one serializer
    reg.register("json-alias", first)
    assert reg.get_by_tag(1) is first
    # replacing a name with another instance of the same tag: refused while an alias holds
    # the old one, allowed once it is the only name
    with pytest.raises(ValueError, match="json-alias"):
        reg.register("json", JSONSerializer())
    reg.unregister("json-alias")
    second = reg.register("json", JSONSerializer())
    assert reg.get_by_tag(1) is second
    assert reg.get_by_name("json") is second


def test_derived_tags_can_collide_and_are_refused() -> None:
    seen: dict[int, str] = {}
    for i in range(100_000):
        name = f"s{i}"
        tag = derive_tag(name)
        if tag in seen:
            break
        seen[tag] = name
    else:  # pragma: no cover
        pytest.fail("no CRC collision found")

    class Named(JSONSerializer):
        def __init__(self, name: str) -> None:
            self.name = name
            self.tag = derive_tag(name)

    reg = SerializerRegistry()
    reg.register(seen[tag], Named(seen[tag]))
    with pytest.raises(ValueError, match="another name or an explicit tag"):
        reg.register(name, Named(name))


def test_unregister_forgets_the_tag() -> None:
    reg = SerializerRegistry()
    s = reg.register("msgpack", MsgpackSerializer())
    assert reg.get_by_tag(2) is s
    reg.unregister("msgpack")
    assert reg.get_by_tag(2) is None
    with pytest.raises(KeyError):
        reg.get_by_name("msgpack")


def test_subclasses_get_a_tag_derived_from_their_name() -> None:
    class Upper(Serializer):
        name = "upper-json"

        def dumps(self, data: dict[str, Any]) -> bytes:
            return JSONSerializer().dumps(data)

        def loads(self, payload: bytes) -> dict[str, Any]:
            return JSONSerializer().loads(payload)

    assert Upper.tag == derive_tag("upper-json")
    assert 0x8000 <= Upper.tag <= 0xFFFF

    class Pinned(Upper):
        name = "pinned"
        tag = 0x1234

    assert Pinned.tag == 0x1234

    class Untagged(Serializer):
        def dumps(self, data: dict[str, Any]) -> bytes:
            return b""

        def loads(self, payload: bytes) -> dict[str, Any]:
            return {}

    with pytest.raises(ValueError, match="no valid tag"):
        SerializerRegistry().register("untagged", Untagged())


def test_derived_tags_are_stable() -> None:
    # tags are persisted in every payload: changing the derivation would orphan stored data
    assert [derive_tag(n) for n in ("json", "msgpack", "pickle")] == [1, 2, 3]
    assert derive_tag("orjson") == 54746
    assert derive_tag("protobuf.acacheorm_test.Everything") == 37565


def _struct_nest(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _node_chain(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"label": "leaf", "children": []}
    for _ in range(depth):
        node = {"label": "x", "children": [node]}
    return node


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("extra", {"deep": _struct_nest(60)}),  # Struct: two or three messages per level
        ("anything", _struct_nest(80)),  # Value
        ("items", [_struct_nest(70)]),  # ListValue
        ("tree", _node_chain(120)),  # a recursive message type
        ("values", [1, _struct_nest(300)]),
    ],
)
def test_protobuf_refuses_at_write_what_its_parser_cannot_read(field: str, value: Any) -> None:
    s = ProtobufSerializer(Everything)
    with pytest.raises(SerializationError, match=rf"field {field}: nested deeper"):
        s.dumps({"text": "t", field: value})


def test_protobuf_nesting_within_the_parser_limit_round_trips() -> None:
    s = ProtobufSerializer(Everything)
    for row in (
        {"extra": {"deep": _struct_nest(30)}},
        {"tree": _node_chain(97)},
        {"text": "x" * 1000, "tags": ["y" * 100] * 50},  # large but flat: no parse-back
    ):
        assert {k: v for k, v in s.loads(s.dumps(row)).items() if k in row} == row
    # a message type that cannot nest is never parsed back, however large
    assert not ProtobufSerializer(Legacy)._may_nest_too_deep
    assert ProtobufSerializer(Everything)._may_nest_too_deep
