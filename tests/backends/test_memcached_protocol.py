"""memcached's protocol without a server: request bytes and canned reply bytes."""

from __future__ import annotations

from typing import Any

import pytest

from acacheorm._commands import (
    KEEP_TTL,
    Add,
    Cas,
    Delete,
    Gets,
    Incr,
    NotNative,
    Replace,
    Set,
    Touch,
)
from acacheorm._exceptions import BackendError, ValueTooLargeError
from acacheorm.backends.memcached._protocol import (
    _MORE,
    Steps,
    _ProtocolError,
    _Reply,
    _Step,
    get_request,
    parse_reply,
    parse_values,
    server_version,
    set_line,
)


def replies(data: bytes) -> list[_Reply]:
    """Every meta reply in ``data``, read as a connection reads them."""
    out: list[_Reply] = []
    pos = 0
    while pos < len(data):
        reply, pos = parse_reply(data, pos)
        assert reply is not None, f"reply cut short: {data[pos:]!r}"
        out.append(reply)
    return out


def drive(steps: _Step, answers: list[bytes]) -> tuple[list[bytes], Any]:
    """Run ``steps`` against canned reply bytes: the requests it sent, and its result."""
    sent: list[bytes] = []
    canned = replies(b"".join(answers))
    try:
        request = next(steps)
        while True:
            if request is not _MORE:
                sent.append(request.data)
            request = steps.send(canned.pop(0))
    except StopIteration as stop:
        assert not canned, f"replies left over: {canned}"
        return sent, stop.value


def test_meta_replies_parse_with_and_without_values() -> None:
    got = replies(b"VA 5 c12 t-1\r\nhello\r\nHD\r\nEN\r\nVA 0 c3\r\n\r\nNS\r\n")
    assert [r.code for r in got] == [b"VA", b"HD", b"EN", b"VA", b"NS"]
    assert got[0].value == b"hello" and got[0].flag(b"c") == 12 and got[0].flag(b"t") == -1
    assert got[1].value is None
    assert got[3].value == b""
    with pytest.raises(_ProtocolError, match="flag b't' missing"):
        got[3].flag(b"t")


def test_bad_reply_bytes_are_protocol_errors() -> None:
    with pytest.raises(_ProtocolError, match="bad reply"):
        parse_reply(b"\r\n", 0)
    with pytest.raises(_ProtocolError, match="bad reply"):
        parse_reply(b"HD\nHD\r\n", 0)  # a bare LF inside a line
    with pytest.raises(_ProtocolError, match="bad reply"):
        parse_reply(b"VA -3\r\nabc\r\n", 0)
    with pytest.raises(_ProtocolError, match="not terminated by CRLF"):
        parse_reply(b"VA 3\r\nabcde", 0)
    with pytest.raises(ValueError):
        parse_reply(b"VA x\r\n", 0)


def test_a_reply_cut_short_asks_for_the_bytes_it_lacks() -> None:
    data = b"VA 5 c1\r\nhello\r\n"
    for cut in range(len(data)):
        reply, need = parse_reply(data[:cut], 0)
        assert reply is None and cut < need <= len(data)
    assert parse_reply(b"HD\r\n" + data, 4) == (
        _Reply(b"VA", (b"c1",), b"hello", b"VA 5 c1"),
        4 + len(data),
    )


def test_classic_get_replies_parse_in_bulk() -> None:
    # values may hold anything, CRLF and "END" included: only the lengths delimit them
    stored = {b"app:a": b"x\r\nEND\r\n", b"app:b": b"", b"app:c": bytes(range(256))}
    data = b"".join(b"VALUE %b 0 %d\r\n%b\r\n" % (k, len(v), v) for k, v in stored.items())
    data += b"END\r\n"
    values: dict[bytes, bytes] = {}
    assert parse_values(data + b"HD\r\n", 0, values) == (len(data), 0)
    assert values == stored
    # arriving in pieces: what is complete is read, and the rest waits for enough bytes
    for cut in range(len(data)):
        values = {}
        pos, need = parse_values(data[:cut], 0, values)
        assert need > cut and pos <= cut
        assert parse_values(data, pos, values) == (len(data), 0)
        assert values == stored
    assert get_request([b"a", b"b", b"a"]) == b"get a b\r\n"  # each key once


@pytest.mark.parametrize(
    "reply",
    [
        b"ERROR\r\n",
        b"SERVER_ERROR out of memory\r\n",
        b"VALUE k 0\r\n",
        b"VALUE k 0 3 9\r\nabc\r\nEND\r\n",  # a cas unique: not the reply to get
        b"VALUE k 0 -1\r\n\r\nEND\r\n",
        b"VALUE k 0 3\r\nabcd\r\nEND\r\n",  # longer than announced
        b"END \r\n",
    ],
)
def test_bad_get_replies_are_protocol_errors(reply: bytes) -> None:
    with pytest.raises((_ProtocolError, ValueError)):
        parse_values(reply, 0, {})


def test_server_version() -> None:
    assert server_version(b"VERSION 1.6.21") == (1, 6, 21)
    with pytest.raises(_ProtocolError):
        server_version(b"ERROR")


def test_store_commands_build_meta_sets() -> None:
    steps = Steps(1024)
    assert set_line(b"k", b"v", b" T0") == b"ms k 1 T0\r\nv\r\n"
    assert drive(steps.of(Set("k", b"val", None), b"k", "k"), [b"HD\r\n"]) == (
        [b"ms k 3 T0\r\nval\r\n"],
        True,
    )
    sent, result = drive(steps.of(Add("k", b"v", 10), b"k", "k"), [b"NS\r\n"])
    assert sent == [b"ms k 1 T11 ME\r\nv\r\n"] and result is False  # exptime: one tick more
    sent, result = drive(steps.of(Delete("k"), b"k", "k"), [b"NF\r\n"])
    assert sent == [b"md k\r\n"] and result is False
    sent, result = drive(steps.of(Touch("k", None), b"k", "k"), [b"TOUCHED\r\n"])
    assert sent == [b"touch k 0\r\n"] and result is True


def test_a_refusal_is_an_error_result_naming_the_key() -> None:
    _, result = drive(
        Steps(1024).of(Set("k", b"v", None), b"app:k", "k"), [b"SERVER_ERROR out of memory\r\n"]
    )
    assert isinstance(result, BackendError)
    assert "key 'k'" in str(result) and "out of memory" in str(result)


def test_a_value_too_large_is_refused_without_a_request() -> None:
    sent, result = drive(Steps(300).of(Set("k", b"x" * 300, None), b"k", "k"), [])
    assert sent == [] and isinstance(result, ValueTooLargeError)


def test_incr_past_64_bits_asks_the_executor_to_put_the_wrapped_amount_back() -> None:
    # memcached wrapped 2**64 - 2 + 5 to 3: the step answers what the result is and which
    # command the executor's gets/cas plan must apply to make the stored value match it
    sent, result = drive(Steps(1024).of(Incr("n", 5, None), b"n", "n"), [b"VA 1\r\n3\r\n"])
    assert sent == [b"ma n N0 J5 D5 v\r\n"]
    assert isinstance(result, NotNative)
    assert result.redo == Incr("n", 2**64) and result.result == 3 + 2**64
    assert result.create is False


def test_negative_incr_and_replace_keeping_the_ttl_are_left_to_the_executor() -> None:
    for command in (Incr("n", -2, None), Replace("n", b"v", KEEP_TTL)):
        sent, result = drive(Steps(1024).of(command, b"n", "n"), [])
        assert sent == []  # nothing sent: the executor runs them as gets/cas plans
        assert isinstance(result, NotNative) and result.redo == command
    # a stored value ma cannot add to (negative, not a number): the same, after one request
    sent, result = drive(
        Steps(1024).of(Incr("n", 1, None), b"n", "n"),
        [b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"],
    )
    assert sent == [b"ma n N0 J1 D1 v\r\n"]
    assert isinstance(result, NotNative) and result.redo == Incr("n", 1, None)


def test_cas_keeping_the_ttl_reads_it_again_in_the_same_write() -> None:
    _, (value, token) = drive(Steps(1024).of(Gets("k"), b"k", "k"), [b"VA 1 c9 t-1\r\nv\r\n"])
    assert value == b"v"
    sent, result = drive(
        Steps(1024).of(Cas("k", b"w", token, KEEP_TTL), b"k", "k"), [b"HD t-1\r\n", b"HD\r\n"]
    )
    assert sent == [b"mg k t\r\nms k 1 C9 T0\r\nw\r\n"] and result is True
    _, result = drive(Steps(1024).of(Cas("k", b"w", "nope", None), b"k", "k"), [])
    assert isinstance(result, BackendError) and "not a MemcachedBackend token" in str(result)
