"""uvicorn's HTTP/1.1 protocol (httptools), answering in the API's JSON error shape.

A request the HTTP parser itself refuses (a negative or malformed ``Content-Length``, two
different ones, a broken request line or header) never reaches the app: uvicorn answers it
400 with a plain-text body. This subclass sends the same status with the JSON error every other
400 has (``{"error", "code": "invalid_request"}``), so a client has one error shape to read.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import error_json

__all__ = ["JsonErrorHttpToolsProtocol"]

_MESSAGE = (
    "malformed HTTP request: the request line or a header (Content-Length, "
    "Transfer-Encoding, ...) cannot be parsed"
)


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = error_json(400, _MESSAGE)
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
