"""The ``codeq`` command. This first cut has ``version`` and ``config show``; the server
commands (``serve``, ``gateway``, ``deliver``) and the client commands arrive with the gateway
and the SDK."""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from codeq import __version__
    from codeq.settings import Settings, SettingsError

    parser = argparse.ArgumentParser(prog="codeq", description="codeQ task queue")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    config = sub.add_parser("config", help="settings")
    config_sub = config.add_subparsers(dest="action", required=True)
    show = config_sub.add_parser("show", help="print the effective settings, secrets masked")
    show.add_argument("--config", help="YAML settings file (else $CODEQ_CONFIG_PATH)")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"codeq {__version__}")
        return 0
    try:
        settings = Settings.load(args.config, environ=os.environ)
    except SettingsError as exc:
        print(f"codeq: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(settings.masked(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
