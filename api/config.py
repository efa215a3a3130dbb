"""Settings, from environment variables only. An invalid value stops the service with its name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from service.db import DEFAULT_DATABASE_URL


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    max_body_bytes: int = 1024 * 1024
    auto_migrate: bool | None = None  # None: on for SQLite, off otherwise
    log_level: str = "INFO"
    db_pool_size: int = 10

    @property
    def migrates_on_start(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.database_url.startswith("sqlite")


# name -> (attribute, description, default shown in the docs)
VARIABLES: dict[str, tuple[str, str]] = {
    "IPT_DATABASE_URL": (
        "database_url",
        "SQLAlchemy URL of the database. Default `sqlite:///./ipt-careplans.db`; "
        "PostgreSQL as `postgresql://user:password@host:5432/name` (psycopg 3).",
    ),
    "IPT_MAX_BODY_BYTES": (
        "max_body_bytes",
        "Largest request body accepted (413 above). Default 1048576.",
    ),
    "IPT_AUTO_MIGRATE": (
        "auto_migrate",
        "Apply database migrations on start: `true`/`false`. Default true for SQLite, false "
        "otherwise (run `ipt-careplans db upgrade`).",
    ),
    "IPT_LOG_LEVEL": ("log_level", "DEBUG, INFO, WARNING or ERROR. Default INFO."),
    "IPT_DB_POOL_SIZE": (
        "db_pool_size",
        "Database connections per process (PostgreSQL). Default 10.",
    ),
}


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if number < 1:
        raise ConfigError(f"{name} must be at least 1, not {number}")
    return number


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from the environment, refusing invalid values."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    if "IPT_DATABASE_URL" in env:
        url = env["IPT_DATABASE_URL"].strip()
        if "://" not in url:
            raise ConfigError(
                f"IPT_DATABASE_URL must be a database URL such as "
                f"postgresql://host/name, not {url!r}"
            )
        values["database_url"] = url
    if "IPT_MAX_BODY_BYTES" in env:
        values["max_body_bytes"] = _positive_int("IPT_MAX_BODY_BYTES", env["IPT_MAX_BODY_BYTES"])
    if "IPT_AUTO_MIGRATE" in env:
        values["auto_migrate"] = _bool("IPT_AUTO_MIGRATE", env["IPT_AUTO_MIGRATE"])
    if "IPT_LOG_LEVEL" in env:
        level = env["IPT_LOG_LEVEL"].strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"IPT_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
        values["log_level"] = level
    if "IPT_DB_POOL_SIZE" in env:
        values["db_pool_size"] = _positive_int("IPT_DB_POOL_SIZE", env["IPT_DB_POOL_SIZE"])
    return Settings(**values)  # type: ignore[arg-type]
