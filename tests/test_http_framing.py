"""What the HTTP parser refuses before the app sees it (a negative or malformed Content-Length,
two different ones) is answered in the API's JSON error shape too, by a real `codeq serve`
(gateway/http_protocol.py), never with uvicorn's plain text (issue 15, item 4)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.served import TOKEN, Served, serve


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve({}) as s:
        yield s


def _raw(served: Served, request: bytes) -> tuple[str, dict[str, str], bytes]:
    url = urlsplit(served.base)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize("length", ["-1", "abc", "5, 6", "99999999999999999999", "+5", "0x10"])
def test_a_content_length_the_parser_refuses_gets_the_json_error(
    served: Served, length: str
) -> None:
    request = (
        f"POST /v1/codeq/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n{}"
    ).encode()
    status, headers, body = _raw(served, request)
    assert status.startswith("HTTP/1.1 400"), status
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["code"] == "invalid_request" and "malformed HTTP request" in answer["error"]


def test_a_broken_request_line_gets_the_json_error(served: Served) -> None:
    status, headers, body = _raw(served, b"POST /v1/codeq/tasks HTTP/9\r\n\r\n")
    assert status.startswith("HTTP/1.1 400"), status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == "invalid_request"
