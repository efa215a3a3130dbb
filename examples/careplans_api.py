"""A small client of the ipt-careplans API for the example scripts: Python's standard library
only, so the scripts run in the environment ``pip install .`` creates.

It takes its own access token with the client-credentials grant (``POST /auth/token`` with
the client's id and secret) and renews it: shortly before it expires (tokens last 5 minutes
by default) and once more when the service answers 401 (the token was revoked, or the
service's clocks disagree). The credentials come from ``--client-id``/``--client-secret``
or the variables ``IPT_CLIENT_ID``/``IPT_CLIENT_SECRET``, as printed by::

    eval "$(.venv/bin/ipt-careplans clients create --name admin \\
        --scopes "system/CarePlan.cruds system/Goal.cruds" --format env)"

A token in ``IPT_TOKEN`` (from ``ipt-careplans token --client NAME``) is used instead when no
credentials are given; it cannot be renewed, so a long run fails when it expires.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
TOKEN_PATH = "/auth/token"
# Renew this long before the token expires, at most a fifth of its lifetime: a request
# started just before expiry must not arrive just after it.
RENEW_MARGIN_SECONDS = 30.0


class ApiError(Exception):
    """The service answered with an error, or could not be reached."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Message
    body: bytes
    url: str

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def failure(self) -> str:
        """The status, detail and field errors of an error response (problem+json or not)."""
        try:
            problem = self.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            text = self.body.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
            return f"HTTP {self.status} {self.reason}" + (f": {text}" if text else "")
        detail = (
            problem.get("detail") or problem.get("error_description") or problem.get("title", "")
        )
        parts = [f"HTTP {self.status} {detail}".rstrip()]
        for error in problem.get("errors") or []:
            parts.append(f"{error.get('field', '?')}: {error.get('message', '')}")
        return "; ".join(parts)


def add_connection_options(parser: argparse.ArgumentParser, scope: str) -> None:
    """The options every script shares: where the service is and how to authenticate."""
    parser.add_argument(
        "--base-url",
        default=os.environ.get("IPT_BASE_URL", DEFAULT_BASE_URL),
        help=f"where the service runs (IPT_BASE_URL; default {DEFAULT_BASE_URL})",
    )
    parser.add_argument("--client-id", help="the API client's id (default: IPT_CLIENT_ID)")
    parser.add_argument(
        "--client-secret",
        help="the client's secret (default: IPT_CLIENT_SECRET; prefer the variable, since "
        "options are visible to other users of the machine)",
    )
    parser.add_argument(
        "--scope", default=scope, help=f"scopes to ask the token for (default {scope!r})"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each request (30)"
    )


class CarePlansApi:
    """Requests to the service with a valid access token, renewed as it expires."""

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str = "",
        token: str | None = None,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.timeout = timeout
        self.headers = {"Accept": "application/json", **(headers or {})}
        self.token = token
        # time.monotonic() after which the token is renewed; never for a given token.
        self.renew_at = float("inf") if token else 0.0
        self.tokens_taken = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace, **options: Any) -> CarePlansApi:
        """A client for the parsed options, with credentials from the environment if not
        given; SystemExit naming what to set when there are none."""
        client_id = args.client_id or os.environ.get("IPT_CLIENT_ID", "").strip()
        secret = args.client_secret or os.environ.get("IPT_CLIENT_SECRET", "").strip()
        token = os.environ.get("IPT_TOKEN", "").strip()
        if not (client_id and secret) and not token:
            raise SystemExit(
                "set IPT_CLIENT_ID and IPT_CLIENT_SECRET to an API client's credentials "
                '(eval "$(ipt-careplans clients create --name NAME --scopes ... --format env)"),'
                " or IPT_TOKEN to an access token"
            )
        if client_id and secret:
            return cls(
                args.base_url,
                client_id=client_id,
                client_secret=secret,
                scope=args.scope,
                timeout=args.timeout,
                **options,
            )
        return cls(args.base_url, token=token, timeout=args.timeout, **options)

    # --- the access token ---------------------------------------------------------------

    @property
    def renewable(self) -> bool:
        return bool(self.client_id and self.client_secret)

    def take_token(self) -> str:
        """A new access token from the token endpoint (client-credentials grant)."""
        if not self.renewable:
            raise ApiError(
                "the access token in IPT_TOKEN was refused (expired?): take a new one, or set "
                "IPT_CLIENT_ID and IPT_CLIENT_SECRET so that tokens are renewed"
            )
        basic = base64.b64encode(
            f"{urllib.parse.quote(str(self.client_id), safe='')}:"
            f"{urllib.parse.quote(str(self.client_secret), safe='')}".encode()
        ).decode("ascii")
        form = {"grant_type": "client_credentials", "scope": self.scope}
        response = self._send(
            "POST",
            self.base_url + TOKEN_PATH,
            urllib.parse.urlencode(form).encode("ascii"),
            {
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        if response.status != 200:
            raise ApiError(f"POST {TOKEN_PATH} (taking a token) answered {response.failure()}")
        granted = response.json()
        lifetime = float(granted.get("expires_in", 300))
        self.token = str(granted["access_token"])
        self.renew_at = time.monotonic() + lifetime - min(RENEW_MARGIN_SECONDS, lifetime / 5)
        self.tokens_taken += 1
        return self.token

    def current_token(self) -> str:
        if self.token is None or time.monotonic() >= self.renew_at:
            return self.take_token()
        return self.token

    # --- requests -----------------------------------------------------------------------

    def url(self, path_or_url: str, params: dict[str, Any] | None = None) -> str:
        """An absolute URL for a path of the API (its links are paths such as /api/v1/...)."""
        url = path_or_url
        if not urllib.parse.urlsplit(url).scheme:
            url = self.base_url + url
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        return url

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
    ) -> Response:
        """One request with the access token; on 401 once more with a new token."""
        url = self.url(path, params)
        body = None if json_body is None else json.dumps(json_body).encode("utf-8")
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        headers["Authorization"] = f"Bearer {self.current_token()}"
        response = self._send(method, url, body, headers)
        if response.status == 401:
            headers["Authorization"] = f"Bearer {self.take_token()}"
            response = self._send(method, url, body, headers)
        return response

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self.request("GET", path, params=params)
        if response.status != 200:
            raise ApiError(f"GET {response.url} answered {response.failure()}")
        try:
            return response.json()
        except ValueError as error:
            raise ApiError(f"GET {response.url} did not answer JSON") from error

    def items(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a paginated list, following ``links.next`` to the last page."""
        url: str | None = path
        while url:
            page = self.get_json(url, params)
            yield from page["items"]
            following = (page.get("links") or {}).get("next")
            url = following or None
            params = None  # the next link carries every query parameter

    def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Response:
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return Response(answer.status, answer.reason, answer.headers, answer.read(), url)
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, str(error.reason), error.headers, error.read(), url)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ApiError(f"{method} {url} failed: {reason}") from error
