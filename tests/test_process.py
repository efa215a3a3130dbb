"""The production server as real processes: `ipt-careplans serve` under gunicorn.

Graceful shutdown on SIGTERM, several servers on one PostgreSQL database, /metrics
adding up the counts of several workers, and what a worker does after the fork.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ROOT, TEST_DATABASE_URL, run_cli
from sqlalchemy import text

from service.db import Database, normalise_url

pytestmark = pytest.mark.slow

EPISODE = json.loads((ROOT / "docs" / "examples" / "episode.json").read_text(encoding="utf-8"))
FHIR_JSON = {"Content-Type": "application/fhir+json"}
# How long serve waits for requests in flight after SIGTERM (gunicorn's graceful_timeout).
GRACEFUL_TIMEOUT = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result


def _admin_token(env: dict[str, str]) -> str:
    """A token from the command line, as an operator would take it."""
    name = f"admin-{uuid.uuid4().hex[:8]}"
    _cli("clients", "create", "--name", name, "--scopes", "system/*.cruds", env=env)
    return _cli("token", "--client", name, env=env).stdout.strip()


class Serve:
    """One `ipt-careplans serve` process."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env={**os.environ, "IPT_LOG_LEVEL": "WARNING", **env},
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not answer in 60 s:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=GRACEFUL_TIMEOUT + 15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log_file.close()


@contextmanager
def serving(env: dict[str, str], workers: int, log: Path) -> Iterator[Serve]:
    server = Serve(env, workers, log)
    try:
        yield server
    finally:
        server.stop()


def _session(token: str) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    env = {"IPT_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}", "IPT_AUTO_MIGRATE": "false"}
    _cli("db", "upgrade", env=env)
    return env


def _episode(number: int) -> dict[str, Any]:
    episode = copy.deepcopy(EPISODE)
    episode["identifier"] = [{"system": "urn:example:process-test", "value": f"P-{number}"}]
    episode["subject"] = {"reference": f"Patient/{number}"}
    return episode


def _transaction(count: int, first: int = 0) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": _episode(number),
                "request": {"method": "POST", "url": "CarePlan"},
            }
            for number in range(first, first + count)
        ],
    }


def test_sigterm_lets_the_request_in_flight_finish(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    token = _admin_token(sqlite_env)
    with serving(sqlite_env, workers=1, log=tmp_path / "serve.log") as server:
        http = _session(token)
        # A transaction of many episodes: each one writes a plan, its phases and goals
        # and their FHIR versions. Measure that it takes long enough to signal into.
        probe = 40
        started = time.monotonic()
        timed = http.post(f"{server.url}/fhir", json=_transaction(probe), headers=FHIR_JSON)
        took = time.monotonic() - started
        assert timed.status_code == 200, timed.text
        # Aim at about 3 s: long enough to signal into, well inside the graceful timeout.
        size = max(probe, min(600, int(probe * 3.0 / took)))
        bundle = _transaction(size, first=probe)

        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                outcome["response"] = http.post(
                    f"{server.url}/fhir", json=bundle, headers=FHIR_JSON, timeout=120
                )
            except requests.RequestException as error:
                outcome["error"] = error

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)  # well inside the request
        assert sender.is_alive(), f"finished before SIGTERM: {took=} {size=} {outcome}"
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        sender.join(timeout=GRACEFUL_TIMEOUT + 10)
        exit_code = server.process.wait(timeout=GRACEFUL_TIMEOUT + 10)
        assert time.monotonic() - signalled < GRACEFUL_TIMEOUT + 5

    assert "error" not in outcome, outcome.get("error")
    response = outcome["response"]
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert len(result["entry"]) == size
    assert all(entry["response"]["status"].startswith("201") for entry in result["entry"])
    assert exit_code == 0, server.log.read_text()


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text (0 when absent)."""
    for line in metrics_text.splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return 0.0


def _worker_counts(directory: Path) -> dict[int, float]:
    """Requests to /healthz counted by each worker, read from its own file alone."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for path in directory.glob("counter_*.db"):
        alone = directory.parent / f"alone-{path.stem}"
        alone.mkdir(exist_ok=True)
        (alone / path.name).write_bytes(path.read_bytes())
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        text = generate_latest(registry).decode()
        counts[int(path.stem.rsplit("_", 1)[1])] = _sample(
            text, "ipt_http_requests_total", route="/healthz", status="200"
        )
    return {pid: count for pid, count in counts.items() if count}


def test_metrics_add_up_the_counts_of_every_worker(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**sqlite_env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    token = _admin_token(sqlite_env)
    with serving(env, workers=2, log=tmp_path / "serve.log") as server:
        http = _session(token)
        assert http.get(f"{server.url}/api/v1/care-plans").status_code == 200
        created = http.post(f"{server.url}/fhir/CarePlan", json=_episode(1), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        missing = http.get(f"{server.url}/fhir/CarePlan/{created.json()['id']}-none")
        assert missing.status_code == 404
        # Parallel requests on new connections until both workers have answered some.
        deadline = time.monotonic() + 30
        while len(_worker_counts(directory)) < 2 and time.monotonic() < deadline:
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(lambda _: requests.get(f"{server.url}/healthz", timeout=5), range(32))
                )
        per_worker = _worker_counts(directory)
        assert len(per_worker) == 2, f"only {per_worker} answered"

        scraped = requests.get(f"{server.url}/metrics", timeout=10)  # no token: public
        assert scraped.status_code == 200
        assert scraped.headers["Content-Type"].startswith("text/plain")
        body = scraped.text

    health = _sample(body, "ipt_http_requests_total", route="/healthz", status="200")
    assert health == sum(per_worker.values())  # both workers' counts, added up
    assert _sample(body, "ipt_http_requests_total", route="/api/v1/care-plans") == 1
    route = "/fhir/<resource_type>/<resource_id>"
    assert _sample(body, "ipt_http_requests_total", route=route, status="404") == 1
    assert created.json()["id"] not in body  # route templates, never URLs
    assert _sample(body, "ipt_http_request_duration_seconds_count", route="/healthz") == health
    writes = {"resource_type": "CarePlan", "interaction": "create"}
    assert _sample(body, "ipt_fhir_writes_total", **writes) == 1
    assert re.search(r"^ipt_db_pool_connections_in_use(\{.*\})? 0\.0$", body, re.M), body
    # Once the workers are gone their live gauges are too: only the arbiter's is left.
    gauges = {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("gauge_livesum_*.db")}
    assert gauges <= {server.process.pid}


@pytest.fixture
def shared_postgres(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh private schema of the PostgreSQL test database, migrated by the CLI."""
    if not TEST_DATABASE_URL or not TEST_DATABASE_URL.startswith("postgresql"):
        pytest.skip(
            "several servers on one shared database is the PostgreSQL deployment: set "
            "IPT_TEST_DATABASE_URL to a PostgreSQL database (SQLite is one process's file)"
        )
    schema = f"process_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = Database(TEST_DATABASE_URL)
    with admin.engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = normalise_url(TEST_DATABASE_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    env = {"IPT_DATABASE_URL": url.render_as_string(hide_password=False)}
    _cli("db", "upgrade", env=env)
    try:
        yield env
    finally:
        with admin.engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def test_two_servers_on_one_postgresql_database(
    shared_postgres: dict[str, str], tmp_path: Path
) -> None:
    token = _admin_token(shared_postgres)
    with (
        serving(shared_postgres, workers=2, log=tmp_path / "a.log") as first,
        serving(shared_postgres, workers=2, log=tmp_path / "b.log") as second,
    ):
        http = _session(token)
        servers = [first.url, second.url]
        created = http.post(f"{first.url}/fhir/CarePlan", json=_episode(7), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        plan_id = created.json()["id"]

        # If-Match updates of one plan through both servers: one 200 per version.
        rounds, racers = 5, 6
        with ThreadPoolExecutor(racers) as pool:
            for round_number in range(rounds):
                current = http.get(f"{second.url}/fhir/CarePlan/{plan_id}")
                etag = current.headers["ETag"]
                resource = current.json()
                description = f"round {round_number}, changed by racer"

                def update(
                    n: int,
                    resource: dict[str, Any] = resource,
                    etag: str = etag,
                    said: str = description,
                ) -> int:
                    body = {**resource, "description": f"{said} {n}"}
                    return http.put(
                        f"{servers[n % 2]}/fhir/CarePlan/{plan_id}",
                        json=body,
                        headers={**FHIR_JSON, "If-Match": etag},
                        timeout=60,
                    ).status_code

                statuses = sorted(pool.map(update, range(racers)))
                assert statuses.count(200) == 1, statuses
                assert set(statuses) <= {200, 409, 412}, statuses

        # Parallel conditional creates of one identifier through both servers: one resource.
        episode = _episode(8)
        identifier = "identifier=urn:example:process-test|P-8"

        def conditional_create(n: int) -> int:
            return http.post(
                f"{servers[n % 2]}/fhir/CarePlan",
                json=episode,
                headers={**FHIR_JSON, "If-None-Exist": identifier},
                timeout=60,
            ).status_code

        with ThreadPoolExecutor(20) as pool:
            statuses = sorted(pool.map(conditional_create, range(20)))
        assert statuses.count(201) == 1, statuses
        assert statuses.count(200) == 19, statuses
        found = http.get(f"{first.url}/fhir/CarePlan?{identifier}").json()
        assert [e["search"]["mode"] for e in found.get("entry", [])] == ["match"]

        # Every version of the plan is in its history, consecutive, none lost or doubled.
        history = http.get(f"{second.url}/fhir/CarePlan/{plan_id}/_history?_count=100").json()
        versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
        assert versions == list(range(1, rounds + 2)), versions
        latest = http.get(f"{first.url}/fhir/CarePlan/{plan_id}").json()
        assert latest["meta"]["versionId"] == str(rounds + 1)


def test_a_worker_keeps_what_it_inherits_out_of_full_collections(database_url: str) -> None:
    """After the fork, a worker freezes what it inherited (the app, its modules and their
    tables), so that a full garbage collection walks only what the worker made since:
    under load such collections came every few seconds and stopped every thread of the
    worker for 100-150 ms. Checked on the hook gunicorn calls in the worker."""
    import gc
    from types import SimpleNamespace

    from api.server import _after_fork

    database = Database(database_url)
    worker = SimpleNamespace(
        app=SimpleNamespace(application=SimpleNamespace(extensions={"ipt_database": database}))
    )
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        tracked = len(gc.get_objects())
        _after_fork(None, worker)
        # Everything tracked before the hook is now out of the collector's generations.
        assert gc.get_freeze_count() > tracked * 0.9
        assert len(gc.get_objects()) < tracked / 10
    finally:
        gc.unfreeze()
        database.dispose()
