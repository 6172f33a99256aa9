"""Client profiles: where the CLI finds its server and tokens.

``~/.codeq/config.yaml`` (the directory is ``$CODEQ_CONFIG_DIR`` when set) holds named
profiles::

    current: default
    profiles:
      default:
        baseUrl: http://127.0.0.1:8080
        producerToken: ...
        workerToken: ...
        adminToken: ...

Precedence, highest first: a command-line flag, the environment (``CODEQ_BASE_URL``,
``CODEQ_TOKEN``, ``CODEQ_PRODUCER_TOKEN``, ``CODEQ_WORKER_TOKEN``, ``CODEQ_ADMIN_TOKEN``,
``CODEQ_PROFILE``), the profile, the default (``http://127.0.0.1:8080``, no token). ``token``
is the fallback of the three role tokens. The file is written with mode 0600: it holds tokens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["FIELDS", "Profile", "ProfileError", "Profiles", "config_dir", "resolve"]

DEFAULT_BASE_URL: Final = "http://127.0.0.1:8080"

#: profile key → (environment variable, attribute)
FIELDS: Final = {
    "baseUrl": ("CODEQ_BASE_URL", "base_url"),
    "token": ("CODEQ_TOKEN", "token"),
    "producerToken": ("CODEQ_PRODUCER_TOKEN", "producer_token"),
    "workerToken": ("CODEQ_WORKER_TOKEN", "worker_token"),
    "adminToken": ("CODEQ_ADMIN_TOKEN", "admin_token"),
}
TOKEN_KEYS: Final = frozenset({"token", "producerToken", "workerToken", "adminToken"})


class ProfileError(ValueError):
    """The profile file is unreadable or names an unknown profile."""


def config_dir(environ: Mapping[str, str]) -> Path:
    given = environ.get("CODEQ_CONFIG_DIR")
    return Path(given) if given else Path(environ.get("HOME", str(Path.home()))) / ".codeq"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    base_url: str = DEFAULT_BASE_URL
    token: str | None = None
    producer_token: str | None = None
    worker_token: str | None = None
    admin_token: str | None = None

    def masked(self) -> dict[str, Any]:
        out: dict[str, Any] = {"profile": self.name}
        for key, (_env, attr) in FIELDS.items():
            value = getattr(self, attr)
            if key in TOKEN_KEYS and value:
                value = f"{value[:4]}…({len(value)} chars)" if len(value) > 8 else "***"
            out[key] = value
        return out


class Profiles:
    """The profile file, read and written as a whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"current": "default", "profiles": {}}
        if path.exists():
            import yaml  # only when there is a file: a CLI command starts faster without it

            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ProfileError(f"cannot read {path}: {exc}") from exc
            if not isinstance(loaded, dict) or not isinstance(loaded.get("profiles", {}), dict):
                raise ProfileError(f"{path}: expected a mapping with 'profiles'")
            self.data.update(loaded)

    @classmethod
    def at(cls, environ: Mapping[str, str]) -> Profiles:
        return cls(config_dir(environ) / "config.yaml")

    @property
    def current(self) -> str:
        return str(self.data.get("current") or "default")

    def get(self, name: str) -> dict[str, Any]:
        entry = self.data["profiles"].get(name)
        return dict(entry) if isinstance(entry, dict) else {}

    def update(self, name: str, values: Mapping[str, Any], *, make_current: bool = False) -> None:
        entry = self.get(name)
        for key, value in values.items():
            if key not in FIELDS:
                raise ProfileError(f"unknown profile key {key!r}")
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        self.data["profiles"][name] = entry
        if make_current or len(self.data["profiles"]) == 1:
            self.data["current"] = name

    def save(self) -> None:
        import yaml

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(self.data, f, sort_keys=False)
        os.replace(tmp, self.path)


def resolve(
    environ: Mapping[str, str],
    *,
    profile: str | None = None,
    flags: Mapping[str, str | None] | None = None,
) -> Profile:
    """The effective profile: flag > environment > profile file > default."""
    profiles = Profiles.at(environ)
    name = profile or environ.get("CODEQ_PROFILE") or profiles.current
    named = profile or environ.get("CODEQ_PROFILE")
    if named and name != "default" and name not in profiles.data["profiles"]:
        raise ProfileError(f"no profile {name!r} in {profiles.path}")
    stored = profiles.get(name)
    given = flags or {}
    values: dict[str, Any] = {}
    for key, (env, attr) in FIELDS.items():
        value = given.get(attr) or environ.get(env) or stored.get(key)
        if value:
            values[attr] = str(value)
    return Profile(name=name, **values)
