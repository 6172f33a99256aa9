"""Real keys, real JWTs and a real JWKS server on 127.0.0.1, shared by the auth tests.

Keys are generated with ``cryptography``; tokens are signed with PyJWT (or built by hand for
the forgeries PyJWT refuses to make). The JWKS server is a ``ThreadingHTTPServer`` that counts
its requests, so refresh behaviour is asserted on what actually went over the wire.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = [
    "ISSUER",
    "PRODUCER_AUD",
    "WORKER_AUD",
    "JwksServer",
    "Signer",
    "b64url",
    "ec_signer",
    "ed_signer",
    "handmade_token",
    "rsa_signer",
]

ISSUER = "https://idp.test/"
WORKER_AUD = "codeq-worker"
PRODUCER_AUD = "codeq-producer"


@dataclass(frozen=True)
class Signer:
    """A private key with its public JWK (``kid``, ``alg``, ``use: sig``)."""

    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    def sign(
        self, claims: dict[str, Any], *, kid: str | None = None, alg: str | None = None
    ) -> str:
        headers = {"kid": self.kid if kid is None else kid}
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=headers)


def _jwk(public: Any, kid: str, alg: str) -> dict[str, Any]:
    if alg.startswith("RS"):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif alg.startswith("ES"):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


def rsa_signer(kid: str, bits: int = 2048) -> Signer:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return Signer(kid, "RS256", private, _jwk(private.public_key(), kid, "RS256"))


def ec_signer(kid: str) -> Signer:
    private = ec.generate_private_key(ec.SECP256R1())
    return Signer(kid, "ES256", private, _jwk(private.public_key(), kid, "ES256"))


def ed_signer(kid: str) -> Signer:
    private = ed25519.Ed25519PrivateKey.generate()
    return Signer(kid, "EdDSA", private, _jwk(private.public_key(), kid, "EdDSA"))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    return head + "." + b64url(signature)


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving ``document`` (or ``status``); counts requests."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.status = 200
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests += 1
                    status, body = server.status, json.dumps(server.document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def serve(self, *signers: Signer) -> None:
        with self._lock:
            self.document = {"keys": [s.jwk for s in signers]}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
