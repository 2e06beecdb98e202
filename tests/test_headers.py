"""The header reader of kiln's gevent worker (runtime/serving/headers.py), alone."""
from __future__ import annotations

import io

import pytest

from runtime.serving.headers import (
    FIELDS_CEILING,
    MAX_HEADERS,
    MAX_LINE,
    Headers,
    limits,
    read_headers,
)


def _read(raw: bytes, version: str = "HTTP/1.1") -> Headers:
    stream = io.BufferedReader(io.BytesIO(raw + b"body"))
    headers = read_headers(stream, version)
    if not headers.status:
        assert stream.read() == b"body", "the reader stops at the empty line, before the body"
    return headers


def test_fields_are_read_in_order_and_found_in_any_case() -> None:
    headers = _read(b"Host: x\r\nContent-Type:  application/json \r\nX-Two: a\r\n"
                    b"x-two: b\r\nContent-Length: 4\r\nX-Tab:\tv\t\r\n\r\n")
    assert headers.status == ""
    assert headers.items() == [("Host", "x"), ("Content-Type", "application/json"),
                               ("X-Two", "a"), ("x-two", "b"), ("Content-Length", "4"),
                               ("X-Tab", "v")]
    assert headers.get("CONTENT-length") == "4" and headers.getheader("x-TWO") == "a"
    assert headers.get("missing") is None and headers.get("missing", "") == ""
    assert headers.typeheader == "application/json"
    assert list(headers.headers) == [f"{n}: {v}\r\n" for n, v in headers.items()]
    del headers["content-length"]
    assert headers.get("Content-Length") is None
    assert [name for name, _ in headers.items()] == ["Host", "Content-Type", "X-Two", "x-two",
                                                      "X-Tab"]


def test_latin_1_values_empty_values_and_chunked_bodies_are_read() -> None:
    headers = _read(b"Host: x\r\nX-Name: caf\xe9\r\nX-Empty:\r\nTransfer-Encoding: Chunked\r\n\r\n")
    assert headers.status == ""
    assert (headers.get("x-name"), headers.get("x-empty")) == ("caf\xe9", "")
    assert _read(b"Content-Length: 0\r\n\r\n", "HTTP/1.0").status == ""


@pytest.mark.parametrize(("raw", "why"), [
    (b"Host: x\r\n folded: on\r\n\r\n", "Invalid header line"),
    (b"Host x\r\n\r\n", "Invalid header line"),
    (b"Host : x\r\n\r\n", "Invalid header line"),
    (b"H(st: x\r\n\r\n", "Invalid header line"),
    (b": x\r\n\r\n", "Invalid header line"),
    (b"X\xe9: a\r\n\r\n", "Invalid header line"),
    (b"Host: a\x00b\r\n\r\n", "Invalid header value"),
    (b"Host: a\rb\r\n\r\n", "Invalid header value"),
    (b"X: a\x01\r\n\r\n", "Invalid header value"),
    (b"X: a\x7f\r\n\r\n", "Invalid header value"),
    (b"Transfer-Encoding: chunked\x0b\r\n\r\n", "Invalid header value"),
    (b"X: a\nContent-Length: 0\r\n\r\n", "Header line not ended by CRLF"),
    (b"Host: x\r\n\n", "Header line not ended by CRLF"),
    (b"Host: a\r\nhost: b\r\n\r\n", "host given more than once"),
    (b"Content-Type: a\r\nContent-Type: b\r\n\r\n", "content-type given more than once"),
    (b"Content-Length: 4\r\nContent-Length: 4\r\n\r\n", "content-length given more than once"),
    (b"Content-Length: 4\r\nContent-Length: 5\r\n\r\n", "content-length given more than once"),
    (b"Content-Length: +4\r\n\r\n", "Invalid Content-Length"),
    (b"Content-Length: 0_4\r\n\r\n", "Invalid Content-Length"),
    (b"Content-Length: -1\r\n\r\n", "Invalid Content-Length"),
    (b"Content-Length:\r\n\r\n", "Invalid Content-Length"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     "transfer-encoding given more than once"),
    (b"Transfer-Encoding: gzip, chunked\r\n\r\n", "Unsupported Transfer-Encoding"),
    (b"Transfer-Encoding: chunked, chunked\r\n\r\n", "Unsupported Transfer-Encoding"),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
     "Transfer-Encoding with Content-Length"),
])
def test_what_gunicorn_s_parser_refuses_is_refused(raw: bytes, why: str) -> None:
    assert _read(raw).status == why


def test_a_chunked_body_is_refused_on_http_1_0() -> None:
    assert _read(b"Transfer-Encoding: chunked\r\n\r\n", "HTTP/1.0").status == (
        "Transfer-Encoding in an HTTP/1.0 request")


def test_too_many_or_too_long_lines_are_refused() -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    assert _read(many).status == f"More than {MAX_HEADERS} headers"
    enough = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n"
    assert _read(enough).status == ""
    longest = b"X: " + b"v" * (MAX_LINE - 3) + b"\r\n\r\n"
    assert _read(longest).status == ""
    assert _read(b"X: " + b"v" * (MAX_LINE - 2) + b"\r\n\r\n").status == "Header line too long"
    assert _read(b"X: " + b"v" * 10 * MAX_LINE + b"\r\n\r\n").status == "Header line too long"


@pytest.mark.parametrize("raw", [b"", b"Host: x\r\n", b"Host: x\r\nX-Partial: abc"])
def test_headers_cut_off_by_the_end_of_the_connection_are_refused(raw: bytes) -> None:
    assert read_headers(io.BufferedReader(io.BytesIO(raw))).status == "Headers cut off"


def test_gunicorn_s_limit_settings_are_read_as_gunicorn_reads_them() -> None:
    assert limits(100, 8190) == (MAX_HEADERS, MAX_LINE)
    assert limits(5, 64) == (5, 64)
    assert limits(0, 0) == limits(-1, -1) == (FIELDS_CEILING, MAX_LINE)
    assert limits(FIELDS_CEILING + 1, 1) == (FIELDS_CEILING, 1)
    three = b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    stream = io.BufferedReader(io.BytesIO(three))
    assert read_headers(stream, max_fields=2).status == "More than 2 headers"
    stream = io.BufferedReader(io.BytesIO(b"A: 12\r\n\r\n"))
    assert read_headers(stream, max_line=4).status == "Header line too long"
    stream = io.BufferedReader(io.BytesIO(b"A: 12\r\n\r\n"))
    assert read_headers(stream, max_line=5).status == ""
