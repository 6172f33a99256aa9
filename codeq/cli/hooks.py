"""``codeq webhook verify`` and ``codeq webhook listen``: check and watch signed deliveries."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from codeq.cli.common import JsonFlag, Out, fail, require_extra

webhook_app = typer.Typer(help="Check and receive signed webhooks.", no_args_is_help=True)

SecretOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--secret",
        "-s",
        help="Signing secret (repeat during a rotation) [env CODEQ_WEBHOOK_SECRET].",
        show_default=False,
    ),
]
PublicKeyOpt = Annotated[
    str | None, typer.Option(help="ed25519 public key (whpk_...) for v1a signatures.")
]
ToleranceOpt = Annotated[int, typer.Option(help="Accepted clock difference, seconds.")]


def register(app: typer.Typer) -> None:
    app.add_typer(webhook_app, name="webhook")


def _secrets(given: list[str] | None) -> list[str]:
    if given:
        return given
    env = os.environ.get("CODEQ_WEBHOOK_SECRET", "")
    return [s for s in env.split(",") if s.strip()]


def parse_capture(raw: bytes) -> tuple[dict[str, str], bytes]:
    """A captured request: ``{"headers": {...}, "body": "..."}`` (JSON), or the HTTP message
    itself (an optional request line, headers, a blank line, the body)."""
    stripped = raw.lstrip()
    if stripped.startswith(b"{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("headers"), dict) and "body" in doc:
            body = doc["body"]
            encoded = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            return {str(k): str(v) for k, v in doc["headers"].items()}, encoded
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    if not sep:
        fail("the capture has no blank line between headers and body", usage=True)
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon and " " not in name.strip():
            headers[name.strip()] = value.strip()
    return headers, body


@webhook_app.command("secret")
def webhook_secret(
    ctx: typer.Context,
    config: Annotated[
        str | None, typer.Option(help="Config file (as codeq serve reads it).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Print the secret this machine's codeq serve signs result callbacks and notifications with
    (the development one it made in dataDir, unless webhookHmacSecret is set). Exit 1 when
    webhooks go unsigned (webhookUnsigned)."""
    import os

    from codeq.settings import Settings
    from codeq.webhooks import signing_secret

    out = Out(ctx, json_out)
    settings = Settings.load(config, environ=os.environ)
    secret = signing_secret(
        settings.webhook_hmac_secret,
        unsigned=settings.webhook_unsigned,
        data_dir=settings.data_dir,
    )
    if secret is None:
        out.data({"secret": None}, lambda d: print("unsigned (webhookUnsigned is set)"))
        raise typer.Exit(1)
    out.data({"secret": secret}, lambda d: print(secret))


@webhook_app.command("verify")
def webhook_verify(
    ctx: typer.Context,
    secret: SecretOpt = None,
    public_key: PublicKeyOpt = None,
    tolerance: ToleranceOpt = 300,
    json_out: JsonFlag = False,
) -> None:
    """Check a captured delivery read from stdin. Exit 0 when a signature matches, else 1."""
    from codeq.webhooks import WebhookVerificationError, verify

    out = Out(ctx, json_out)
    secrets = _secrets(secret)
    if not secrets and public_key is None:
        fail("--secret (or CODEQ_WEBHOOK_SECRET) or --public-key is needed", usage=True)
    headers, body = parse_capture(sys.stdin.buffer.read())
    try:
        verify(headers, body, secrets, tolerance=tolerance, public_key=public_key)
    except WebhookVerificationError as exc:
        reason = str(exc)
        out.data({"valid": False, "error": reason}, lambda d: print(f"invalid: {reason}"))
        raise typer.Exit(1) from None
    msg_id = {k.lower(): v for k, v in headers.items()}.get("webhook-id")
    out.data({"valid": True, "webhookId": msg_id}, lambda d: print("valid"))


def _describe(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    h = {k.lower(): v for k, v in headers.items()}
    try:
        payload: Any = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = body.decode(errors="replace")
    event = payload.get("type") if isinstance(payload, dict) else None
    return {
        "webhookId": h.get("webhook-id"),
        "type": event or h.get("x-codeq-event"),
        "timestamp": h.get("webhook-timestamp") or h.get("x-codeq-timestamp"),
        "body": payload,
    }


@webhook_app.command("listen")
def webhook_listen(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    secret: SecretOpt = None,
    public_key: PublicKeyOpt = None,
    tolerance: ToleranceOpt = 300,
    count: Annotated[int | None, typer.Option(help="Exit after this many deliveries.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """A local receiver: verifies each delivery (with --secret) and prints it.

    Answers 204 to a delivery that verifies (or to any, without a secret) and 401 to one that
    does not, so the sender sees the failure. With --json, one JSON line per delivery.
    """
    require_extra("listen", "codeq webhook listen")
    import asyncio

    from aiohttp import web

    from codeq.webhooks import WebhookVerificationError, verify

    out = Out(ctx, json_out)
    secrets = _secrets(secret)
    received = 0
    done = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        nonlocal received
        body = await request.read()
        headers = dict(request.headers)
        entry = _describe(headers, body)
        entry["path"] = request.path
        status = 204
        if secrets or public_key:
            try:
                verify(headers, body, secrets, tolerance=tolerance, public_key=public_key)
                entry["verified"] = True
            except WebhookVerificationError as exc:
                entry["verified"] = False
                entry["error"] = str(exc)
                status = 401
        else:
            entry["verified"] = None
        received += 1
        _print_delivery(out, entry)
        if count is not None and received >= count:
            done.set()
        return web.Response(status=status)

    async def main() -> None:
        server = web.Application()
        server.router.add_route("*", "/{tail:.*}", receive)
        runner = web.AppRunner(server, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            fail(f"cannot listen on {host}:{port}: {exc.strerror}")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        check = "verifying signatures" if secrets or public_key else "NOT verifying (no --secret)"
        out.note(f"listening on http://{host}:{port}/ ({check}); Ctrl-C to stop")
        try:
            await done.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


def _print_delivery(out: Out, entry: dict[str, Any]) -> None:
    if out.json:
        sys.stdout.write(json.dumps(entry, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    mark = {True: "[green]verified[/]", False: "[red]INVALID[/]", None: "[yellow]unchecked[/]"}
    stamp = time.strftime("%H:%M:%S")
    out.console.print(
        f"{stamp} {entry.get('type') or '-'} {entry.get('webhookId') or '-'} "
        f"{mark[entry['verified']]}" + (f" ({entry['error']})" if entry.get("error") else "")
    )
    out.console.print_json(data=entry["body"]) if isinstance(
        entry["body"], dict | list
    ) else out.console.print(entry["body"])
