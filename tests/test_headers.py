"""The header reader of kiln's gevent worker (runtime/serving/headers.py), alone."""
from __future__ import annotations

import io

import pytest

from runtime.serving.headers import MAX_HEADERS, MAX_LINE, Headers, read_headers


def _read(raw: bytes) -> Headers:
    stream = io.BufferedReader(io.BytesIO(raw))
    headers = read_headers(stream)
    assert stream.read() == b"body", "the reader stops at the empty line, before the body"
    return headers


def test_fields_are_read_in_order_and_found_in_any_case() -> None:
    headers = _read(b"Host: x\r\nContent-Type:  application/json \r\nX-Two: a\r\n"
                    b"x-two: b\r\nContent-Length: 4\r\n\r\nbody")
    assert headers.status == ""
    assert headers.items() == [("Host", "x"), ("Content-Type", "application/json"),
                               ("X-Two", "a"), ("x-two", "b"), ("Content-Length", "4")]
    assert headers.get("CONTENT-length") == "4" and headers.getheader("x-TWO") == "a"
    assert headers.get("missing") is None and headers.get("missing", "") == ""
    assert headers.typeheader == "application/json"
    assert "host" in headers and "nope" not in headers
    assert list(headers.headers) == [f"{n}: {v}\r\n" for n, v in headers.items()]
    del headers["content-length"]
    assert headers.get("Content-Length") is None
    assert [name for name, _ in headers.items()] == ["Host", "Content-Type", "X-Two", "x-two"]


def test_bare_line_feeds_and_latin_1_values_are_read() -> None:
    headers = _read(b"Host: x\nX-Name: caf\xe9\n\nbody")
    assert headers.status == "" and headers.get("x-name") == "caf\xe9"


def test_the_same_content_length_twice_is_one() -> None:
    assert _read(b"Content-Length: 4\r\nContent-Length: 4\r\n\r\nbody").status == ""


@pytest.mark.parametrize(("raw", "why"), [
    (b"Host: x\r\n folded: on\r\n\r\nbody", "Invalid header line"),
    (b"Host x\r\n\r\nbody", "Invalid header line"),
    (b"Host : x\r\n\r\nbody", "Invalid header line"),
    (b"H(st: x\r\n\r\nbody", "Invalid header line"),
    (b"Host: a\x00b\r\n\r\nbody", "Invalid header value"),
    (b"Host: a\rb\r\n\r\nbody", "Invalid header value"),
    (b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nbody", "Conflicting Content-Length headers"),
])
def test_what_gunicorn_s_parser_refuses_is_refused(raw: bytes, why: str) -> None:
    stream = io.BufferedReader(io.BytesIO(raw))
    assert read_headers(stream).status == why


def test_too_many_or_too_long_lines_are_refused() -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    assert read_headers(io.BufferedReader(io.BytesIO(many))).status.startswith("More than")
    enough = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n"
    assert read_headers(io.BufferedReader(io.BytesIO(enough))).status == ""
    long = b"X: " + b"v" * MAX_LINE + b"\r\n\r\n"
    assert read_headers(io.BufferedReader(io.BytesIO(long))).status == "Line too long"


def test_a_connection_closed_before_the_empty_line_ends_the_fields() -> None:
    headers = read_headers(io.BufferedReader(io.BytesIO(b"Host: x\r\n")))
    assert headers.status == "" and headers.get("host") == "x"
