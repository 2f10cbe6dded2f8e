"""Settings: a CLI flag beats ``CRONHUB_<KEY>``, which beats ``cronhub.toml``/``[tool.cronhub]``."""

from __future__ import annotations

import os
import re
import socket
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cronhub.errors import UsageError

DEFAULT_STORAGE = "sqlite:///cronhub.db"


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    number = float(value)
    if number <= 0:
        raise ValueError("must be a number > 0")
    return number


def _seconds_or_zero(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    number = float(value)
    if not 0 <= number <= 60:
        raise ValueError("must be a number of seconds from 0 to 60")
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _names(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _text(value: Any) -> str:
    if not isinstance(value, str | int | float):
        raise ValueError("must be a string")
    return str(value)


#: Known settings: key -> (converter, default).
SETTINGS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "storage": (_text, None),
    "token": (_text, None),
    "instance_id": (_text, None),
    "lease_ttl": (_number, 30.0),
    "heartbeat_interval": (_number, 10.0),
    "reaper_interval": (_number, 5.0),
    "claim_ahead": (_seconds_or_zero, 0.5),
    "shutdown_grace": (_number, 30.0),
    "retention_days": (_number, 90.0),
    "disable_plugins": (_names, []),
    "strict_plugins": (_flag, False),
    "gc_freeze": (_flag, True),
}


@dataclass
class Settings:
    """Resolved settings, with where each came from (for error messages)."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    #: Plugin tables (``[tool.cronhub.slack]``) from the file, by name.
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def get(self, key: str, default: Any = None) -> Any:
        """A setting's value, or ``default`` when unset."""
        value = self.values.get(key)
        return default if value is None else value

    def section(self, name: str) -> dict[str, Any]:
        """A plugin's table: ``[tool.cronhub.<name>]`` overridden by ``CRONHUB_<NAME>_<KEY>``."""
        result = dict(self.tables.get(name, {}))
        prefix = f"CRONHUB_{name.upper()}_"
        for key, value in self.environ.items():
            if key.startswith(prefix) and value != "":
                result[key[len(prefix) :].lower()] = value
        return result

    @property
    def instance_id(self) -> str:
        """This instance's name in runs and leases: the setting, or ``host:pid:random``."""
        value = self.values.get("instance_id")
        if not value:
            value = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
            self.values["instance_id"] = value
        return str(value)


def _read_file(cwd: Path) -> tuple[dict[str, Any], str | None]:
    for name in ("cronhub.toml", "pyproject.toml"):
        path = cwd / name
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read settings from {path}: {exc}") from exc
        if name == "pyproject.toml":
            table = data.get("tool", {}).get("cronhub")
            if table is None:
                continue
            return table, f"[tool.cronhub] in {path}"
        return data, str(path)
    return {}, None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    cwd: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every known setting from flags (``overrides``), variables and files.

    :raises UsageError: naming the setting and where it came from, for a bad value or an
        unreadable file.
    """
    env = dict(os.environ if environ is None else environ)
    table, file_source = _read_file(Path(cwd) if cwd else Path.cwd())
    settings = Settings(environ=env)
    settings.tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    for key, (convert, default) in SETTINGS.items():
        source = "default"
        raw: Any = default
        if key in table:
            raw, source = table[key], file_source or "file"
        env_key = f"CRONHUB_{key.upper()}"
        if env.get(env_key, "") != "":
            raw, source = env[env_key], env_key
        if overrides and overrides.get(key) is not None:
            raw, source = overrides[key], f"--{key.replace('_', '-')}"
        if raw is not None and source != "default":
            try:
                raw = convert(raw)
            except (TypeError, ValueError) as exc:
                shown = mask_url(str(raw)) if key == "storage" else raw
                if key == "token":
                    shown = "***"
                raise UsageError(f"setting {key}={shown!r} (from {source}): {exc}") from exc
        settings.values[key] = raw
        settings.sources[key] = source
    return settings


_PASSWORD = re.compile(r"(?<=:)[^:@/]*(?=@)")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print or log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _PASSWORD.sub("***", url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
