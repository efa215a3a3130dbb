"""Settings, from environment variables only. An invalid value stops the service with its name."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from service.db import DEFAULT_DATABASE_URL
from service.endpoint_policy import parse_networks


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    max_body_bytes: int = 1024 * 1024
    auto_migrate: bool | None = None  # None: on for SQLite, off otherwise
    log_level: str = "INFO"
    db_pool_size: int = 10
    public_base_url: str = "http://127.0.0.1:8000"
    token_lifetime_seconds: int = 300
    token_signing_key_file: str | None = None
    # Signing keys at rest and the token endpoint's rate limits (see _token_protection).
    key_encryption_key_file: str | None = None
    rate_limit_storage: str | None = None  # None: counters in the service's database
    token_attempts_per_address: int = 60
    token_failures_per_client_address: int = 10
    token_failures_per_client: int = 100
    external_issuer: str | None = None
    external_jwks_url: str | None = None
    external_jwks_file: str | None = None
    external_audience: str | None = None
    external_scope_claim: str = "scope"
    external_patient_claim: str = "patient"
    # Proxies whose X-Forwarded-For / Forwarded headers name the caller's address.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # How long the first answer to a POST with an Idempotency-Key is kept and replayed.
    idempotency_retention_seconds: int = 24 * 3600
    # Where subscriptions may send notifications besides public https endpoints.
    subscription_allowed_destinations: tuple[
        ipaddress.IPv4Network | ipaddress.IPv6Network, ...
    ] = ()
    # How long a subscription's events stay available to $events.
    subscription_retention_days: int = 7
    # Delivery of subscription notifications (api.worker): where it runs and how it retries.
    subscription_delivery_in_process: bool | None = None  # None: in serve on SQLite only
    subscription_poll_ms: int = 200
    subscription_delivery_concurrency: int = 8
    subscription_backoff_base_ms: int = 1000
    subscription_backoff_max_ms: int = 300_000
    subscription_lease_margin_ms: int = 30_000
    # Bulk data export ($export): file size, retention, lease, and whether this process runs
    # export jobs in the background.
    export_file_bytes: int = 64 * 1024 * 1024
    export_retention_seconds: int = 3600
    export_lease_seconds: int = 60
    export_worker: bool = True
    # Rendered progress documents kept per process (api/progress.py); 0 keeps none.
    progress_cache_entries: int = 1024

    @property
    def token_endpoint(self) -> str:
        """The URL of the token endpoint: also the audience of client assertions."""
        return f"{self.public_base_url}/auth/token"

    @property
    def token_audience(self) -> str:
        """The audience of the service's own access tokens: its FHIR base URL."""
        return f"{self.public_base_url}/fhir"

    @property
    def external_configured(self) -> bool:
        return self.external_issuer is not None

    @property
    def delivers_in_process(self) -> bool:
        """Whether ``serve`` runs the delivery worker itself (beside its web workers)."""
        if self.subscription_delivery_in_process is not None:
            return self.subscription_delivery_in_process
        return self.database_url.startswith("sqlite")

    @property
    def migrates_on_start(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.database_url.startswith("sqlite")


# name -> (Settings attribute, description for the README table)
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
    "IPT_PUBLIC_BASE_URL": (
        "public_base_url",
        "The URL clients reach the service at, without a trailing slash: the issuer of its "
        "access tokens, whose audience is this URL + `/fhir`; client assertions are addressed "
        "to this URL + `/auth/token`. Default `http://127.0.0.1:8000`.",
    ),
    "IPT_TOKEN_LIFETIME_SECONDS": (
        "token_lifetime_seconds",
        "Lifetime of the access tokens the service issues, 30 to 3600. Default 300.",
    ),
    "IPT_TOKEN_SIGNING_KEY_FILE": (
        "token_signing_key_file",
        "PEM file of the private key access tokens are signed with (RSA of at least 2048 bits, "
        "or EC P-256). Default: an EC P-256 key generated once and kept in the database.",
    ),
    "IPT_KEY_ENCRYPTION_KEY_FILE": (
        "key_encryption_key_file",
        "File holding the key-encryption key (32 random bytes, base64: `openssl rand -base64 "
        "32`) that encrypts the signing keys kept in the database (AES-256-GCM). Without it "
        "those keys are stored in the clear and the service warns at every start; set it "
        "(or `IPT_TOKEN_SIGNING_KEY_FILE`) in production.",
    ),
    "IPT_RATE_LIMIT_STORAGE": (
        "rate_limit_storage",
        "Where the token endpoint's rate-limit counters live, shared by every worker and "
        "replica: `redis://host:6379/0` (or `rediss://`). Default: the service's database.",
    ),
    "IPT_TOKEN_ATTEMPTS_PER_ADDRESS": (
        "token_attempts_per_address",
        "Requests to `POST /auth/token` one source address may make per minute (429 above). "
        "Default 60.",
    ),
    "IPT_TOKEN_FAILURES_PER_CLIENT_ADDRESS": (
        "token_failures_per_client_address",
        "Failed authentications of one client id from one source address per minute; past "
        "it that client id is refused (429) from that address until the minute ends. "
        "Default 10.",
    ),
    "IPT_TOKEN_FAILURES_PER_CLIENT": (
        "token_failures_per_client",
        "Failed authentications of one client id from all addresses together per minute; past "
        "it that client id is refused (429) everywhere until the minute ends. Default 100.",
    ),
    "IPT_EXTERNAL_ISSUER": (
        "external_issuer",
        "`iss` of an external identity provider whose access tokens are also accepted. Needs "
        "`IPT_EXTERNAL_AUDIENCE` and one of `IPT_EXTERNAL_JWKS_URL` or `IPT_EXTERNAL_JWKS_FILE`.",
    ),
    "IPT_EXTERNAL_JWKS_URL": (
        "external_jwks_url",
        "URL of the external identity provider's public keys (JWKS; https, or http on "
        "localhost). Keys are cached and fetched again for an unknown `kid`.",
    ),
    "IPT_EXTERNAL_JWKS_FILE": (
        "external_jwks_file",
        "File holding the external identity provider's public keys (JWKS), read again when "
        "it changes. Instead of `IPT_EXTERNAL_JWKS_URL`.",
    ),
    "IPT_EXTERNAL_AUDIENCE": (
        "external_audience",
        "The `aud` the external identity provider's tokens must carry for this service.",
    ),
    "IPT_EXTERNAL_SCOPE_CLAIM": (
        "external_scope_claim",
        "Claim of external tokens holding the SMART scopes (a space-separated string or a "
        "list). Default `scope`.",
    ),
    "IPT_EXTERNAL_PATIENT_CLAIM": (
        "external_patient_claim",
        "Claim of external tokens naming the patient the token is bound to (`123` or "
        "`Patient/123`). Default `patient`.",
    ),
    "IPT_TRUSTED_PROXIES": (
        "trusted_proxies",
        "Comma-separated addresses or CIDR ranges of the reverse proxies (the ingress) whose "
        "`X-Forwarded-For` or `Forwarded` header names the caller's address in the audit "
        "trail and for the token rate limits; from any other peer those headers are ignored. "
        "Default: none.",
    ),
    "IPT_IDEMPOTENCY_RETENTION_SECONDS": (
        "idempotency_retention_seconds",
        "How long the first answer to a native POST sent with an `Idempotency-Key` is kept "
        "and replayed to a retry with the same key, 60 to 2592000 (30 days). Default 86400 "
        "(24 hours).",
    ),
    "IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS": (
        "subscription_allowed_destinations",
        "Comma- or space-separated addresses or CIDR ranges a subscription's endpoint may "
        "point to besides public https addresses (a receiver inside the cluster), over http "
        "too. Default: none (only https endpoints whose host resolves to public addresses).",
    ),
    "IPT_SUBSCRIPTION_RETENTION_DAYS": (
        "subscription_retention_days",
        "How many days a subscription's events are kept for `$events` (and for delivery to "
        "catch up), 1 to 365. Default 7.",
    ),
    "IPT_SUBSCRIPTION_DELIVERY_IN_PROCESS": (
        "subscription_delivery_in_process",
        "Whether `ipt-careplans serve` also delivers subscription notifications (in a "
        "process of its own beside the web workers): `true`/`false`. Default true for "
        "SQLite, false otherwise (run `ipt-careplans worker`).",
    ),
    "IPT_SUBSCRIPTION_POLL_MS": (
        "subscription_poll_ms",
        "How often a delivery worker looks for subscriptions with something due, in "
        "milliseconds, 10 to 60000: the longest a new event waits before it is sent. "
        "Default 200.",
    ),
    "IPT_SUBSCRIPTION_DELIVERY_CONCURRENCY": (
        "subscription_delivery_concurrency",
        "Notifications one delivery worker sends at the same time (to different "
        "subscriptions), 1 to 256. Default 8.",
    ),
    "IPT_SUBSCRIPTION_BACKOFF_BASE_MS": (
        "subscription_backoff_base_ms",
        "First retry delay after a failed notification, in milliseconds, 10 to 600000; it "
        "doubles with each failure in a row (a random wait up to it: full jitter). "
        "Default 1000.",
    ),
    "IPT_SUBSCRIPTION_BACKOFF_MAX_MS": (
        "subscription_backoff_max_ms",
        "Longest retry delay, in milliseconds, 10 to 3600000. Default 300000 (5 minutes).",
    ),
    "IPT_SUBSCRIPTION_LEASE_MARGIN_MS": (
        "subscription_lease_margin_ms",
        "How long past a subscription's timeout a worker's claim on it holds, in "
        "milliseconds, 100 to 600000: when a worker dies mid-delivery, another sends the "
        "same notification again after the timeout plus this margin. Default 30000.",
    ),
    "IPT_EXPORT_FILE_BYTES": (
        "export_file_bytes",
        "Size past which a bulk export (`$export`) file is split into another file of the "
        "same type, 1024 to 1073741824. Default 67108864 (64 MiB).",
    ),
    "IPT_EXPORT_RETENTION_SECONDS": (
        "export_retention_seconds",
        "How long a bulk export's status and files stay available after it completes (and "
        "a job stays queued), 1 to 604800 (7 days); expired ones are purged. Default 3600.",
    ),
    "IPT_EXPORT_LEASE_SECONDS": (
        "export_lease_seconds",
        "How long a process's hold on a running bulk export lasts without being renewed (it "
        "is renewed with every chunk written); a job whose process died is taken up again "
        "once it runs out, 5 to 3600. Default 60.",
    ),
    "IPT_PROGRESS_CACHE_ENTRIES": (
        "progress_cache_entries",
        "How many plans' rendered progress documents (`GET …/progress`) each process keeps, "
        "least recently read dropped first, 0 to 1000000; 0 keeps none. A kept document is "
        "served while the plan's version and the day are those it was computed for. "
        "Default 1024.",
    ),
    "IPT_EXPORT_WORKER": (
        "export_worker",
        "Run bulk export jobs in a background thread of this process: `true`/`false`. "
        "Default true. With false the process still takes kick-offs and serves status and "
        "files, and another replica runs the jobs.",
    ),
}


def _subscription_delivery(env: Mapping[str, str], values: dict[str, object]) -> None:
    if env.get("IPT_SUBSCRIPTION_DELIVERY_IN_PROCESS", "").strip():
        values["subscription_delivery_in_process"] = _bool(
            "IPT_SUBSCRIPTION_DELIVERY_IN_PROCESS", env["IPT_SUBSCRIPTION_DELIVERY_IN_PROCESS"]
        )
    limits = {
        "IPT_SUBSCRIPTION_POLL_MS": (10, 60_000),
        "IPT_SUBSCRIPTION_DELIVERY_CONCURRENCY": (1, 256),
        "IPT_SUBSCRIPTION_BACKOFF_BASE_MS": (10, 600_000),
        "IPT_SUBSCRIPTION_BACKOFF_MAX_MS": (10, 3_600_000),
        "IPT_SUBSCRIPTION_LEASE_MARGIN_MS": (100, 600_000),
    }
    for name, (low, high) in limits.items():
        if env.get(name, "").strip():
            values[VARIABLES[name][0]] = _int_between(name, env[name].strip(), low, high)
    base = values.get("subscription_backoff_base_ms", Settings.subscription_backoff_base_ms)
    ceiling = values.get("subscription_backoff_max_ms", Settings.subscription_backoff_max_ms)
    if isinstance(base, int) and isinstance(ceiling, int) and ceiling < base:
        raise ConfigError(
            f"IPT_SUBSCRIPTION_BACKOFF_MAX_MS ({ceiling}) must not be less than "
            f"IPT_SUBSCRIPTION_BACKOFF_BASE_MS ({base})"
        )


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


def _int_between(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {number}")
    return number


def _url(name: str, value: str) -> str:
    """An absolute http(s) URL without a trailing slash, query or fragment."""
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http or https URL, not {url!r}")
    if parts.query or parts.fragment or url.endswith("/"):
        raise ConfigError(
            f"{name} must be a URL without a trailing slash, query or fragment, not {url!r}"
        )
    return url


def _readable_file(name: str, value: str) -> str:
    path = Path(value.strip())
    if not path.is_file():
        raise ConfigError(f"{name} must name a readable file; {str(path)!r} is not a file")
    try:
        path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{name}: cannot read {str(path)!r}: {error.strerror}") from None
    return str(path)


def _networks(name: str, value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for part in value.split(","):
        if not part.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{name} must list addresses or CIDR ranges such as 10.0.0.0/8, not {part!r}"
            ) from None
    return tuple(networks)


def _claim_name(name: str, value: str) -> str:
    claim = value.strip()
    if not claim or any(c.isspace() for c in claim):
        raise ConfigError(f"{name} must be a claim name without spaces, not {value!r}")
    return claim


def _external(env: Mapping[str, str], values: dict[str, object]) -> None:
    """The external identity provider: issuer, audience and one key source, or none of them."""
    given = {
        name: env[name].strip()
        for name in (
            "IPT_EXTERNAL_ISSUER",
            "IPT_EXTERNAL_AUDIENCE",
            "IPT_EXTERNAL_JWKS_URL",
            "IPT_EXTERNAL_JWKS_FILE",
        )
        if env.get(name, "").strip()
    }
    for name in ("IPT_EXTERNAL_SCOPE_CLAIM", "IPT_EXTERNAL_PATIENT_CLAIM"):
        if name in env:
            values[VARIABLES[name][0]] = _claim_name(name, env[name])
    if not given:
        return
    for name in ("IPT_EXTERNAL_ISSUER", "IPT_EXTERNAL_AUDIENCE"):
        if name not in given:
            raise ConfigError(f"{name} is required when an external identity provider is set")
    url, file = given.get("IPT_EXTERNAL_JWKS_URL"), given.get("IPT_EXTERNAL_JWKS_FILE")
    if (url is None) == (file is None):
        raise ConfigError(
            "set exactly one of IPT_EXTERNAL_JWKS_URL and IPT_EXTERNAL_JWKS_FILE for the "
            "external identity provider's keys"
        )
    issuer = given["IPT_EXTERNAL_ISSUER"]
    if issuer == values.get("public_base_url", Settings.public_base_url):
        raise ConfigError("IPT_EXTERNAL_ISSUER must differ from IPT_PUBLIC_BASE_URL")
    values["external_issuer"] = issuer
    values["external_audience"] = given["IPT_EXTERNAL_AUDIENCE"]
    if url is not None:
        parts = urlsplit(url)
        local = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise ConfigError(
                f"IPT_EXTERNAL_JWKS_URL must be an https URL (http only on localhost), not {url!r}"
            )
        if not parts.netloc:
            raise ConfigError(f"IPT_EXTERNAL_JWKS_URL must be an absolute URL, not {url!r}")
        values["external_jwks_url"] = url
    if file is not None:
        values["external_jwks_file"] = _readable_file("IPT_EXTERNAL_JWKS_FILE", file)


def key_encryption_key(name: str, path: str) -> bytes:
    """The 32-byte key-encryption key in the file at ``path`` (base64, whitespace ignored)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not base64 text"
        raise ConfigError(f"{name}: cannot read {path!r}: {reason}") from None
    compact = "".join(text.split())
    try:
        key = base64.b64decode(compact.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        # The message never quotes the file's content.
        raise ConfigError(
            f"{name}: {path!r} must hold 32 random bytes, base64-encoded "
            "(`openssl rand -base64 32`)"
        )
    return key


def _token_protection(env: Mapping[str, str], values: dict[str, object]) -> None:
    """The key-encryption key and the token endpoint's rate limits."""
    if env.get("IPT_KEY_ENCRYPTION_KEY_FILE", "").strip():
        path = _readable_file("IPT_KEY_ENCRYPTION_KEY_FILE", env["IPT_KEY_ENCRYPTION_KEY_FILE"])
        key_encryption_key("IPT_KEY_ENCRYPTION_KEY_FILE", path)
        values["key_encryption_key_file"] = path
    if env.get("IPT_RATE_LIMIT_STORAGE", "").strip():
        url = env["IPT_RATE_LIMIT_STORAGE"].strip()
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            shown = parts._replace(netloc=parts.hostname or "").geturl() if parts.scheme else url
            raise ConfigError(
                f"IPT_RATE_LIMIT_STORAGE must be a redis:// or rediss:// URL, not {shown!r}"
            )
        values["rate_limit_storage"] = url
    for name in (
        "IPT_TOKEN_ATTEMPTS_PER_ADDRESS",
        "IPT_TOKEN_FAILURES_PER_CLIENT_ADDRESS",
        "IPT_TOKEN_FAILURES_PER_CLIENT",
    ):
        if env.get(name, "").strip():
            values[VARIABLES[name][0]] = _int_between(name, env[name].strip(), 1, 1_000_000)


def _subscriptions(env: Mapping[str, str], values: dict[str, object]) -> None:
    """The subscriptions' allow-list of destinations and the retention of their events."""
    if env.get("IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS", "").strip():
        text = env["IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS"]
        try:
            values["subscription_allowed_destinations"] = parse_networks(text)
        except ValueError:
            raise ConfigError(
                "IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS must list addresses or CIDR ranges such "
                f"as 10.0.0.0/8, not {text.strip()!r}"
            ) from None
    if env.get("IPT_SUBSCRIPTION_RETENTION_DAYS", "").strip():
        values["subscription_retention_days"] = _int_between(
            "IPT_SUBSCRIPTION_RETENTION_DAYS",
            env["IPT_SUBSCRIPTION_RETENTION_DAYS"].strip(),
            1,
            365,
        )


def _export(env: Mapping[str, str], values: dict[str, object]) -> None:
    """The bulk export settings."""
    bounds = {
        "IPT_EXPORT_FILE_BYTES": (1024, 1024**3),
        "IPT_EXPORT_RETENTION_SECONDS": (1, 7 * 24 * 3600),
        "IPT_EXPORT_LEASE_SECONDS": (5, 3600),
    }
    for name, (low, high) in bounds.items():
        if env.get(name, "").strip():
            values[VARIABLES[name][0]] = _int_between(name, env[name].strip(), low, high)
    if env.get("IPT_EXPORT_WORKER", "").strip():
        values["export_worker"] = _bool("IPT_EXPORT_WORKER", env["IPT_EXPORT_WORKER"])


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
    if "IPT_PUBLIC_BASE_URL" in env:
        values["public_base_url"] = _url("IPT_PUBLIC_BASE_URL", env["IPT_PUBLIC_BASE_URL"])
    if "IPT_TOKEN_LIFETIME_SECONDS" in env:
        values["token_lifetime_seconds"] = _int_between(
            "IPT_TOKEN_LIFETIME_SECONDS", env["IPT_TOKEN_LIFETIME_SECONDS"], 30, 3600
        )
    if env.get("IPT_TOKEN_SIGNING_KEY_FILE", "").strip():
        values["token_signing_key_file"] = _readable_file(
            "IPT_TOKEN_SIGNING_KEY_FILE", env["IPT_TOKEN_SIGNING_KEY_FILE"]
        )
    _token_protection(env, values)
    if "IPT_TRUSTED_PROXIES" in env:
        values["trusted_proxies"] = _networks("IPT_TRUSTED_PROXIES", env["IPT_TRUSTED_PROXIES"])
    if env.get("IPT_IDEMPOTENCY_RETENTION_SECONDS", "").strip():
        values["idempotency_retention_seconds"] = _int_between(
            "IPT_IDEMPOTENCY_RETENTION_SECONDS",
            env["IPT_IDEMPOTENCY_RETENTION_SECONDS"].strip(),
            60,
            30 * 24 * 3600,
        )
    _subscriptions(env, values)
    _subscription_delivery(env, values)
    _export(env, values)
    if env.get("IPT_PROGRESS_CACHE_ENTRIES", "").strip():
        values["progress_cache_entries"] = _int_between(
            "IPT_PROGRESS_CACHE_ENTRIES", env["IPT_PROGRESS_CACHE_ENTRIES"].strip(), 0, 1_000_000
        )
    _external(env, values)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ServerOptions:
    """How ``serve`` runs the production server: read from the environment like Settings."""

    workers: int | None  # None: one per core, at least 2
    threads: int = 4
    metrics_dir: str | None = None  # None: a fresh temporary directory per run


def server_options(environ: Mapping[str, str] | None = None) -> ServerOptions:
    """IPT_WORKERS, IPT_THREADS and PROMETHEUS_MULTIPROC_DIR, refusing invalid values."""
    env = os.environ if environ is None else environ
    workers = None
    if env.get("IPT_WORKERS", "").strip():
        workers = _int_between("IPT_WORKERS", env["IPT_WORKERS"].strip(), 1, 256)
    threads = 4
    if env.get("IPT_THREADS", "").strip():
        threads = _int_between("IPT_THREADS", env["IPT_THREADS"].strip(), 1, 256)
    metrics_dir = None
    if env.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
        path = Path(env["PROMETHEUS_MULTIPROC_DIR"].strip())
        if not path.is_dir():
            raise ConfigError(
                f"PROMETHEUS_MULTIPROC_DIR must name an existing directory; {str(path)!r} is not"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR {str(path)!r} is not writable")
        metrics_dir = str(path)
    return ServerOptions(workers=workers, threads=threads, metrics_dir=metrics_dir)
