"""What every authenticator shares: the base class, the config error, a config reader."""

from __future__ import annotations

import abc
import difflib
import ipaddress
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from codeq.auth.identity import Identity
from codeq.errors import Unauthorized
from codeq.settings import SettingsError

__all__ = [
    "AuthConfigError",
    "Authenticator",
    "ConfigReader",
    "RejectingAuthenticator",
    "Side",
    "is_loopback_host",
]

#: Which routes an authenticator guards; it sets ``Identity.producer`` / ``Identity.worker``.
Side = Literal["producer", "worker"]


class AuthConfigError(SettingsError):
    """The auth settings are missing, inconsistent or unsafe; raised by ``build_auth``.

    A :class:`~codeq.settings.SettingsError` (hence a ``ValueError``), so whatever reports bad
    settings at start-up reports this too. Messages never contain token values.
    """


class Authenticator(abc.ABC):
    """Turns a bearer token into an :class:`Identity` for one side (producer or worker)."""

    @abc.abstractmethod
    async def authenticate(self, token: str) -> Identity:
        """The caller's identity; raises :class:`Unauthorized` saying why (never the token)."""

    async def aclose(self) -> None:  # noqa: B027 - most authenticators hold nothing to close
        """Release what the authenticator holds (an HTTP client)."""


class RejectingAuthenticator(Authenticator):
    """A side with no provider configured: every token is refused with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def authenticate(self, token: str) -> Identity:
        raise Unauthorized(self.reason)


class ConfigReader:
    """Typed reads from a provider's config mapping; errors name ``<name>.<key>``, never values.

    ``name`` is the setting holding the mapping (``producerAuthConfig``). The whole mapping is
    secret (static tokens live in it), so no message quotes a value.
    """

    def __init__(self, config: Mapping[str, Any], name: str) -> None:
        self.config = config
        self.name = name

    def error(self, key: str | None, problem: str) -> AuthConfigError:
        where = f"{self.name}.{key}" if key else self.name
        env = "PRODUCER_AUTH_CONFIG" if self.name.startswith("producer") else "WORKER_AUTH_CONFIG"
        return AuthConfigError(
            f"invalid setting '{where}' (env {env}): {problem}", key=where, env=env
        )

    def check_known(self, known: Iterable[str]) -> None:
        allowed = list(known)
        for key in self.config:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.error(
                    None,
                    f"unknown key '{key}'{hint}; known keys: {', '.join(sorted(allowed))}",
                )

    def string(self, key: str) -> str | None:
        value = self.config.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "expected a non-empty string")
        return value.strip()

    def strings(self, key: str) -> list[str] | None:
        """A non-empty string or a non-empty list of non-empty strings."""
        value = self.config.get(key)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(item, str) and item.strip() for item in items)
        ):
            raise self.error(key, "expected a non-empty string or a list of non-empty strings")
        return [item.strip() for item in items]

    def number(self, key: str, *, ge: float = 0.0) -> float | None:
        value = self.config.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < ge
        ):
            raise self.error(key, f"expected a number >= {ge:g}")
        return float(value)

    def boolean(self, key: str) -> bool | None:
        value = self.config.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.error(key, "expected true or false")
        return value

    def mapping(self, key: str) -> Mapping[str, Any] | None:
        value = self.config.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, "expected a mapping")
        return value


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1`` (also bracketed, or IPv4-mapped)."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
