"""``codeq webhook verify`` and ``codeq webhook listen``: check and watch signed deliveries;
``codeq webhook endpoints ...``: the event-subscription endpoints of your tenant, through the
SDK's endpoint methods.

Secrets stay off the command line when you want: ``verify`` and ``listen`` read
``CODEQ_WEBHOOK_SECRET``, ``endpoints create`` and ``rotate-secret`` read
``CODEQ_ENDPOINT_SECRET`` or, with ``--secret -``, stdin (neither shows in ``ps`` or the
shell's history)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer

from codeq.cli.common import JsonFlag, Out, fail, require_extra, split_commands, state_of

webhook_app = typer.Typer(
    help="Check and receive signed webhooks; manage endpoints.", no_args_is_help=True
)
endpoints_app = typer.Typer(
    help="Event-subscription endpoints of your tenant (producer token).", no_args_is_help=True
)
webhook_app.add_typer(endpoints_app, name="endpoints")

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
    list[str] | None,
    typer.Option(
        "--public-key",
        help="ed25519 public key (whpk_...) for v1a signatures (repeat during a rotation).",
        show_default=False,
    ),
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


@webhook_app.command("event-types")
def webhook_event_types(
    ctx: typer.Context,
    event_type: Annotated[
        str | None, typer.Argument(help="Show this type's JSON schema and example body.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """The event types an endpoint may receive (any token): when each is sent; with a TYPE,
    its JSON schema and an example body."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        catalog = cq.event_types()
    if event_type is None:
        out.data(
            catalog, lambda d: out.table(d["eventTypes"], ("type", "description"), "event types")
        )
        return
    found = next((e for e in catalog.event_types if e.type == event_type), None)
    if found is None:
        known = ", ".join(e.type for e in catalog.event_types)
        fail(f"unknown event type {event_type!r} (known: {known})", usage=True)
    out.data(found)


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
    if not secrets and not public_key:
        fail("--secret (or CODEQ_WEBHOOK_SECRET) or --public-key is needed", usage=True)
    headers, body = parse_capture(sys.stdin.buffer.read())
    try:
        verify(headers, body, secrets, tolerance=tolerance, public_key=public_key)
    except ValueError as exc:  # a bad key is a usage error; a bad signature is "invalid"
        if not isinstance(exc, WebhookVerificationError):
            fail(str(exc), usage=True)
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


# -- codeq webhook endpoints ... ----------------------------------------------------------------

ENDPOINT_COLUMNS = ("id", "url", "eventTypes", "enabled", "rateLimit", "channels", "description")
#: where ``endpoints create`` and ``rotate-secret`` find a secret when --secret is not given
ENDPOINT_SECRET_ENV = "CODEQ_ENDPOINT_SECRET"  # noqa: S105 - a variable's name


class Scheme(StrEnum):
    """How an endpoint's messages are signed."""

    HMAC = "hmac-sha256"
    ED25519 = "ed25519"


EventTypeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--event-type",
        "-e",
        help="Event type to receive (repeat, or a comma list; '*': every task event; "
        "operational types such as endpoint.disabled by name).",
    ),
]
CommandOpt = Annotated[
    list[str] | None,
    typer.Option("--command", "-c", help="Only events of tasks of this command (repeat)."),
]
HeaderOpt = Annotated[
    list[str] | None,
    typer.Option("--header", "-H", help="A custom header 'Name: value' (repeat)."),
]
RateLimitOpt = Annotated[
    int | None,
    typer.Option(help="At most this many deliveries per second (update: 0 removes it)."),
]
DescriptionOpt = Annotated[str | None, typer.Option(help="What the endpoint is for.")]
MetadataOpt = Annotated[
    list[str] | None, typer.Option(help="A metadata entry 'key=value' (repeat).")
]
ChannelOpt = Annotated[
    list[str] | None, typer.Option("--channel", help="A channel label (repeat).")
]
EndpointId = Annotated[str, typer.Argument(help="The endpoint's id (ep_...).")]


def _endpoint_secret(given: str | None) -> str | None:
    """The secret of ``--secret``: its value; ``-``: read from stdin (prompted, not echoed, on
    a terminal); not given: ``$CODEQ_ENDPOINT_SECRET``; None: codeQ makes one."""
    if given == "-":
        if sys.stdin.isatty():
            import getpass

            text = getpass.getpass("secret: ")
        else:
            text = sys.stdin.read()
        secret = text.strip()
        if not secret:
            fail("--secret -: no secret on stdin", usage=True)
        return secret
    if given is not None:
        return given
    return os.environ.get(ENDPOINT_SECRET_ENV, "").strip() or None


def _headers(values: list[str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    out: dict[str, str] = {}
    for value in values:
        name, colon, rest = value.partition(":")
        if not colon or not name.strip():
            fail(f"--header: expected 'Name: value', got {value!r}", usage=True)
        out[name.strip()] = rest.strip()
    return out


def _metadata(values: list[str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    out: dict[str, str] = {}
    for value in values:
        key, eq, rest = value.partition("=")
        if not eq or not key:
            fail(f"--metadata: expected 'key=value', got {value!r}", usage=True)
        out[key] = rest
    return out


def _endpoint_fields(
    *,
    event_type: list[str] | None,
    command: list[str] | None,
    header: list[str] | None,
    rate_limit: int | None,
    description: str | None,
    metadata: list[str] | None,
    channel: list[str] | None,
) -> dict[str, Any]:
    """The options given, as the SDK's endpoint methods take them (snake_case)."""
    fields = {
        "event_types": split_commands(event_type) if event_type is not None else None,
        "commands": split_commands(command) if command is not None else None,
        "headers": _headers(header),
        "rate_limit": rate_limit,
        "description": description,
        "metadata": _metadata(metadata),
        "channels": channel,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _show_endpoint(out: Out, endpoint: Mapping[str, Any]) -> None:
    out.data(endpoint, lambda d: out.record(d))
    if endpoint.get("secret") and not out.json:
        out.note("the signing secret is readable later with: codeq webhook endpoints secret ID")


@endpoints_app.command("create")
def endpoints_create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where the events go (http/https).")],
    event_type: EventTypeOpt = None,
    command: CommandOpt = None,
    header: HeaderOpt = None,
    rate_limit: RateLimitOpt = None,
    secret: Annotated[
        str | None,
        typer.Option(
            help="Your own secret (whsec_ + base64 of 24-64 bytes), '-' to read it from stdin "
            f"[env {ENDPOINT_SECRET_ENV}]; else one is made.",
            show_default=False,
        ),
    ] = None,
    scheme: Annotated[Scheme, typer.Option(help="How messages are signed.")] = Scheme.HMAC,
    description: DescriptionOpt = None,
    metadata: MetadataOpt = None,
    channel: ChannelOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Register an endpoint (every event type unless --event-type says otherwise)."""
    out = Out(ctx, json_out)
    fields = _endpoint_fields(
        event_type=event_type,
        command=command,
        header=header,
        rate_limit=rate_limit,
        description=description,
        metadata=metadata,
        channel=channel,
    )
    event_types = fields.pop("event_types", ["*"])
    chosen = _endpoint_secret(secret)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.create_endpoint(
            url, event_types, signature_scheme=scheme.value, secret=chosen, **fields
        )
    _show_endpoint(out, answer)


@endpoints_app.command("list")
def endpoints_list(
    ctx: typer.Context,
    channel: Annotated[
        str | None, typer.Option("--channel", help="Only endpoints with this channel.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """The endpoints of your tenant."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.list_endpoints(channel=channel)
    out.data(answer, lambda d: out.table(d["endpoints"], ENDPOINT_COLUMNS, "endpoints"))


@endpoints_app.command("get")
def endpoints_get(ctx: typer.Context, endpoint_id: EndpointId, json_out: JsonFlag = False) -> None:
    """One endpoint."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.get_endpoint(endpoint_id)
    _show_endpoint(out, answer)


@endpoints_app.command("update")
def endpoints_update(
    ctx: typer.Context,
    endpoint_id: EndpointId,
    url: Annotated[str | None, typer.Option(help="A new URL.")] = None,
    event_type: EventTypeOpt = None,
    command: CommandOpt = None,
    header: HeaderOpt = None,
    clear_headers: Annotated[bool, typer.Option(help="Remove every custom header.")] = False,
    rate_limit: RateLimitOpt = None,
    description: DescriptionOpt = None,
    metadata: MetadataOpt = None,
    channel: ChannelOpt = None,
    enabled: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Enable (after a failure) or disable it."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Change an endpoint: the options given replace those fields (--header: all headers)."""
    out = Out(ctx, json_out)
    body = _endpoint_fields(
        event_type=event_type,
        command=command,
        header=header,
        rate_limit=rate_limit,
        description=description,
        metadata=metadata,
        channel=channel,
    )
    if clear_headers:
        if header:
            fail("--clear-headers and --header: give one of them", usage=True)
        body["headers"] = {}
    if url is not None:
        body["url"] = url
    if enabled is not None:
        body["enabled"] = enabled
    if not body:
        fail("nothing to change: give at least one option", usage=True)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.update_endpoint(endpoint_id, **body)
    _show_endpoint(out, answer)


@endpoints_app.command("delete")
def endpoints_delete(
    ctx: typer.Context, endpoint_id: EndpointId, json_out: JsonFlag = False
) -> None:
    """Delete an endpoint."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        cq.delete_endpoint(endpoint_id)
    out.data({"deleted": endpoint_id}, lambda d: print(f"deleted {endpoint_id}"))


@endpoints_app.command("test")
def endpoints_test(ctx: typer.Context, endpoint_id: EndpointId, json_out: JsonFlag = False) -> None:
    """Send a signed webhook.test message now and print its delivery. Exit 1 when the
    endpoint did not answer 2xx (the delivery is retried like any other)."""
    out = Out(ctx, json_out)
    # The SDK waits for the receiver too (its timeout and webhookTimeoutSeconds).
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.test_endpoint(endpoint_id)

    def human(d: Mapping[str, Any]) -> None:
        last = (d.get("attemptLog") or [{}])[-1]
        code = last.get("statusCode")
        print(
            f"{d.get('status')}: "
            + (f"HTTP {code}" if code is not None else str(last.get("error") or "no answer"))
            + f" in {last.get('latencyMs', 0)} ms ({d.get('id')})"
        )
        if last.get("response"):
            print(last["response"])

    out.data(answer, human)
    if answer.get("status") != "succeeded":
        raise typer.Exit(1)


@endpoints_app.command("rotate-secret")
def endpoints_rotate(
    ctx: typer.Context,
    endpoint_id: EndpointId,
    secret: Annotated[
        str | None,
        typer.Option(
            help="Your own new secret (whsec_...), '-' to read it from stdin "
            f"[env {ENDPOINT_SECRET_ENV}]; else one is made.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """A new signing secret (ed25519: key pair); the old one keeps signing for 24 hours."""
    out = Out(ctx, json_out)
    chosen = _endpoint_secret(secret)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.rotate_endpoint_secret(endpoint_id, secret=chosen)
    out.data(answer, lambda d: out.record(d))


@endpoints_app.command("secret")
def endpoints_secret(
    ctx: typer.Context, endpoint_id: EndpointId, json_out: JsonFlag = False
) -> None:
    """The endpoint's current signing secret (ed25519: its public key)."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.endpoint_secret(endpoint_id)
    out.data(answer, lambda d: print(d.get("secret") or d.get("publicKey")))


def _aliases() -> None:
    """`codeq webhook replay|recover`: the same commands as `codeq deliveries replay|recover`."""
    from codeq.cli.deliveries import deliveries_recover, deliveries_replay

    webhook_app.command("replay", help="Same as `codeq deliveries replay`.")(deliveries_replay)
    webhook_app.command("recover", help="Same as `codeq deliveries recover`.")(deliveries_recover)


_aliases()
