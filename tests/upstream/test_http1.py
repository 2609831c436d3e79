"""Tests of edgehub.upstream.http1: response heads of the proxy CONNECT and the WebSocket upgrade."""

from __future__ import annotations

import pytest

from edgehub.upstream.http1 import MAX_HEAD_BYTES, HttpHeadError, parse_response_head


def test_a_head_is_parsed_with_lowercase_names_and_the_bytes_after_it_kept() -> None:
    parsed = parse_response_head(b"HTTP/1.1 200 Connection established\r\nVia: a\r\nvia: b\r\n\r\n\x10\x00")
    assert parsed is not None
    head, rest = parsed
    assert (head.status, head.status_line) == (200, "HTTP/1.1 200 Connection established")
    assert head.header("VIA") == "a, b"
    assert rest == b"\x10\x00"


def test_an_incomplete_head_needs_more_data() -> None:
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nVia: a\r\n") is None


@pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"])
def test_what_is_not_an_http_response_head_is_refused(data: bytes) -> None:
    with pytest.raises(HttpHeadError):
        parse_response_head(data)


def test_an_endless_head_is_refused() -> None:
    with pytest.raises(HttpHeadError, match="16384"):
        parse_response_head(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD_BYTES // 6 + 1))
