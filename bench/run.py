"""The benchmark: seed, start the service as deployed, drive it with wrk, compare with
the floor, and write the figures.

    .venv/bin/python -m bench                 # 10,000 episodes, SQLite and PostgreSQL
    .venv/bin/python -m bench --quick         # seconds, small data: checks every scenario
    .venv/bin/python -m bench --growth 1000,10000,100000
    .venv/bin/python -m bench --soak 600      # memory over a 10-minute CRUD mix
    .venv/bin/python -m bench --subscriptions 60            # notification latency
    .venv/bin/python -m bench --subscriptions-soak 600      # receiver down 30 s every 2 min

See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, text

from api.server import default_workers
from bench import bulk_export
from bench.processes import BIN, ROOT, MemoryWatch, Server
from bench.scores import median_ms, percentile, seed_scores, time_records
from bench.seed import PROTOTYPES, seed
from bench.subscriptions import markdown as subscriptions_markdown
from bench.subscriptions import run_subscriptions
from bench.workload import fetch_token, register_client, workload, write_lua
from service.db import Database, normalise_url
from service.models import CarePlan, ResourceVersion

WRK_DIR = Path(__file__).resolve().parent / "wrk"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
THREADS = 4  # per worker, as `serve` defaults

# name -> (wrk script, what it is)
SCENARIOS: dict[str, tuple[str, str]] = {
    "floor": ("floor", "minimal Flask app: one stored JSON row by primary key"),
    "read": ("read", "FHIR read CarePlan/{id}"),
    "search-careplan": (
        "search_careplan",
        "CarePlan?patient=…&status=active&_include=CarePlan:goal",
    ),
    "search-goal": ("search_goal", "Goal?patient=…&lifecycle-status=active"),
    "goal-writes": ("goal_writes", "conditional create, then If-Match update, of Goals"),
    "crud-mix": ("crud_mix", "70 % reads and searches, 30 % Goal creates/updates/deletes"),
    "native": ("native", "native API: get a plan, schedule a session, give homework"),
    "progress": ("progress", "native API: a plan's progress, a course of 40 scores"),
    "record-score": ("record_score", "native API: record a PHQ-9 score (POST …/administrations)"),
}
# Scenarios driven by the benchmark itself, not wrk (not in --quick).
STEPS = {bulk_export.NAME: bulk_export.DESCRIPTION}
ADMINISTRATIONS_PATH = "/api/v1/care-plans/{plan_id}/administrations"
# Plans given a course of 40 scores for the progress scenario (--quick: fewer).
SCORED_PLANS = 20
# --quick: the smallest seed (prototypes) and two copies of it, so the copy path runs too.
QUICK_EPISODES, QUICK_PATIENTS = 150, 60
GROWTH_SCENARIOS = ("read", "search-careplan", "search-goal")


@dataclass
class Figures:
    scenario: str
    description: str
    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    peak_rss_mib: float
    ratio_to_floor: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatabaseRun:
    database: str
    episodes: int
    patients: int
    seed_seconds: float
    workers: int
    threads: int
    connections: int
    scenarios: list[Figures]


# --- databases ---------------------------------------------------------------------------


def _postgres_url(base: str, name: str) -> str:
    return normalise_url(base).set(database=name).render_as_string(hide_password=False)


def _seeded(url: str, episodes: int) -> bool:
    """Whether a database left by an earlier run holds a current schema and the population."""
    database = Database(url)
    try:
        if not database.schema_is_current():
            return False
        with database.reading() as session:
            return session.scalar(select(func.count()).select_from(CarePlan)) == episodes
    except Exception:  # a missing or unreadable database: seed a new one
        return False
    finally:
        database.dispose()


def _prepare_database(
    kind: str, episodes: int, patients: int, work: Path, pg: str, reuse: bool = False
) -> str:
    """A migrated and seeded database of ``kind`` (a fresh one unless ``reuse``); its URL."""
    if kind == "sqlite":
        path = work / f"bench-{episodes}.db"
        url = f"sqlite:///{path}"
        if reuse and path.exists() and _seeded(url, episodes):
            _say(f"  reusing {path}")
            return url
        for leftover in work.glob(f"bench-{episodes}.db*"):
            leftover.unlink()
    else:
        name = f"ipt_bench_{episodes}"
        url = _postgres_url(pg, name)
        if reuse and _seeded(url, episodes):
            _say(f"  reusing database {name}")
            return url
        admin = Database(pg)
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    database = Database(url)
    database.upgrade()
    population = seed(
        database,
        episodes,
        patients,
        prototypes=min(PROTOTYPES, max(50, episodes // 10)),
        progress=lambda m: _say(f"  seeding: {m}"),
    )
    database.dispose()
    _say(f"  seeded {episodes} episodes in {population.seconds:.1f} s")
    return url


def _postgres_available(pg: str) -> bool:
    try:
        Database(pg).ping()
    except Exception:  # any failure means: not available
        return False
    return True


# --- servers -----------------------------------------------------------------------------


def _service(url: str, workers: int, log: Path) -> Server:
    env = {
        "IPT_DATABASE_URL": url,
        "IPT_AUTO_MIGRATE": "false",
        "IPT_TOKEN_LIFETIME_SECONDS": "3600",
        "IPT_WORKERS": str(workers),
        "IPT_THREADS": str(THREADS),
    }
    command = [str(BIN / "ipt-careplans"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    return Server("ipt-careplans", command, env, log, "/readyz")


def _floor(url: str, workers: int, log: Path) -> Server:
    command = [
        str(BIN / "gunicorn"),
        "bench.floor:app",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(THREADS),
        "--worker-class",
        "gthread",
        "--log-level",
        "warning",
    ]
    return Server("floor", command, {"IPT_DATABASE_URL": url}, log, "/ready")


# --- wrk ---------------------------------------------------------------------------------


def _wrk(
    scenario: str, server: Server, data: Path, seconds: float, connections: int, work: Path
) -> dict[str, Any]:
    script_name, _ = SCENARIOS[scenario]
    script = work / f"{script_name}.lua"
    script.write_text(
        (WRK_DIR / "common.lua").read_text() + "\n" + (WRK_DIR / f"{script_name}.lua").read_text()
    )
    command = [
        "wrk",
        "-t",
        str(connections),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        server.url,
        "--",
        str(data),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    for line in result.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            return dict(json.loads(line.removeprefix("BENCH-JSON ")))
    raise RuntimeError(f"wrk gave no figures for {scenario}: {result.stdout}{result.stderr}")


def _figures(scenario: str, raw: dict[str, Any], peak: float) -> Figures:
    seconds = raw["duration_us"] / 1e6
    errors = (
        sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors"))
        + raw["timeouts"]
    )
    return Figures(
        scenario=scenario,
        description=SCENARIOS[scenario][1],
        requests=raw["requests"],
        seconds=round(seconds, 2),
        requests_per_second=round(raw["requests"] / seconds, 1),
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=errors,
        peak_rss_mib=round(peak, 1),
    )


def _drive(
    scenario: str,
    server: Server,
    database: Database,
    token: str,
    seconds: float,
    connections: int,
    work: Path,
) -> Figures:
    data = write_lua(workload(database, token, connections), work / f"{scenario}-data.lua")
    with MemoryWatch(server) as memory:
        raw = _wrk(scenario, server, data, seconds, connections, work)
    figures = _figures(scenario, raw, memory.peak)
    _say(
        f"  {scenario:<16} {figures.requests_per_second:>8.1f} req/s  "
        f"p50 {figures.p50_ms:6.1f} ms  p99 {figures.p99_ms:6.1f} ms  errors {figures.errors}"
    )
    return figures


# --- scores ------------------------------------------------------------------------------


def _takes_scores(server: Server) -> bool:
    """Whether the running service has the native route that records a score, taking the
    fields the record-score scenario sends (its OpenAPI document is public)."""
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=30) as answer:
        document = json.loads(answer.read())
    post = document.get("paths", {}).get(ADMINISTRATIONS_PATH, {}).get("post")
    if post is None:
        return False
    schema = post.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = schema.get("schema", {})
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return {"instrument", "administered_on", "total"} <= set(schema.get("properties", {}))


def _record_in_process(database: Database, token: str, seconds: float) -> Figures:
    """Recording a score through the service layer, in this process, one after another:
    what the write costs without HTTP, for a build without the native route."""
    writable = [p["id"] for p in workload(database, token, 1)["writable"][:50]]
    latencies = time_records(database, writable, seconds)
    elapsed = sum(latencies)
    figures = Figures(
        scenario="record-score",
        description="record a PHQ-9 score through the service layer, in process, one at a "
        "time (no native route in this build)",
        requests=len(latencies),
        seconds=round(elapsed, 2),
        requests_per_second=round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        p50_ms=median_ms(latencies),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99),
        errors=0,
        peak_rss_mib=0.0,
        extra={"in_process": True},
    )
    _say(
        f"  {'record-score':<16} {figures.requests_per_second:>8.1f} req/s  "
        f"p50 {figures.p50_ms:6.1f} ms  p99 {figures.p99_ms:6.1f} ms  (service layer, in process)"
    )
    return figures


# --- history paging ----------------------------------------------------------------------


def _page_history(
    server: Server, token: str, path: str, limit: int | None, name: str, description: str
) -> Figures:
    """Follow a history's next links as a synchronising client does, one page at a time."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    latencies: list[float] = []
    resources = errors = 0
    started = time.perf_counter()
    next_path: str | None = path
    with MemoryWatch(server) as memory:
        while next_path is not None and (limit is None or resources < limit):
            begun = time.perf_counter()
            request = urllib.request.Request(server.url + next_path, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    bundle = json.loads(answer.read())
            except OSError:
                errors += 1
                break
            latencies.append(time.perf_counter() - begun)
            resources += len(bundle.get("entry", []))
            following = [
                link["url"] for link in bundle.get("link", []) if link["relation"] == "next"
            ]
            next_path = None
            if following:
                parts = urlsplit(following[0])
                next_path = f"{parts.path}?{parts.query}"
    seconds = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def percentile(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)

    figures = Figures(
        scenario=name,
        description=description,
        requests=len(latencies),
        seconds=round(seconds, 2),
        requests_per_second=round(len(latencies) / seconds, 1) if seconds else 0.0,
        p50_ms=round(statistics.median(ordered) * 1000, 1),
        p95_ms=percentile(0.95),
        p99_ms=percentile(0.99),
        errors=errors + (0 if resources else 1),
        peak_rss_mib=round(memory.peak, 1),
        extra={"resources": resources, "resources_per_second": round(resources / seconds, 1)},
    )
    _say(
        f"  {name:<16} {resources} resources in {seconds:.1f} s "
        f"({figures.extra['resources_per_second']:.0f}/s), page p50 {figures.p50_ms} ms, "
        f"errors {figures.errors}"
    )
    return figures


def _since_for(database: Database, changes: int) -> str:
    """The `_since` instant after which about ``changes`` versions were written."""
    with database.reading() as session:
        moment = session.scalar(
            select(ResourceVersion.last_updated)
            .order_by(ResourceVersion.last_updated.desc())
            .offset(changes - 1)
            .limit(1)
        )
        if moment is None:
            moment = session.scalar(select(ResourceVersion.last_updated).order_by("last_updated"))
    assert moment is not None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- one database ------------------------------------------------------------------------


def run_database(kind: str, options: argparse.Namespace, work: Path) -> DatabaseRun:
    _say(f"== {kind}: {options.episodes} episodes, {options.patients} patients")
    started = time.perf_counter()
    url = _prepare_database(
        kind, options.episodes, options.patients, work, options.pg, options.reuse
    )
    seed_seconds = time.perf_counter() - started
    workers = options.workers or default_workers()
    database = Database(url)
    if {"progress", "record-score"} & set(options.scenarios):
        scored = seed_scores(database, options.scored_plans)
        _say(f"  {len(scored)} plans hold a course of 40 scores")
    env = {**os.environ, "IPT_DATABASE_URL": url, "IPT_AUTO_MIGRATE": "false"}
    client_id, secret = register_client(env)
    results: list[Figures] = []
    driven = [s for s in options.scenarios if s in SCENARIOS]
    if driven:
        with _floor(url, workers, work / "floor.log") as floor:
            results.append(
                _drive(
                    "floor", floor, database, "unused", options.duration, options.connections, work
                )
            )
    with _service(url, workers, work / f"service-{kind}.log") as service:
        token = fetch_token(service.url, client_id, secret)
        for scenario in driven:
            if scenario == "floor":
                continue
            if scenario == "record-score" and not _takes_scores(service):
                results.append(_record_in_process(database, token, options.duration))
                continue
            results.append(
                _drive(
                    scenario,
                    service,
                    database,
                    token,
                    options.duration,
                    options.connections,
                    work,
                )
            )
        if bulk_export.NAME in options.scenarios:
            results.append(_bulk_export(service, token))
        if not driven:
            database.dispose()
            return _run(kind, options, workers, 0.0, results)
        since = _since_for(database, options.history_changes)
        results.append(
            _page_history(
                service,
                token,
                f"/fhir/_history?_since={since}&_count=500",
                None,
                "history-sync",
                f"/_history?_since=… paging ({options.history_changes} "
                "changes or more), 500 a page",
            )
        )
        results.append(
            _page_history(
                service,
                token,
                "/fhir/_history?_count=500",
                options.export_limit,
                "export",
                "every version of every CarePlan and Goal through /_history",
            )
        )
    database.dispose()
    floor_rate = results[0].requests_per_second
    for figures in results:
        in_process = figures.extra.get("in_process", False)
        unpaced = ("history-sync", "export", bulk_export.NAME)
        if floor_rate and figures.scenario not in unpaced and not in_process:
            figures.ratio_to_floor = round(figures.requests_per_second / floor_rate, 2)
    return _run(kind, options, workers, seed_seconds, results)


def _run(
    kind: str,
    options: argparse.Namespace,
    workers: int,
    seed_seconds: float,
    results: list[Figures],
) -> DatabaseRun:
    return DatabaseRun(
        database=kind,
        episodes=options.episodes,
        patients=options.patients,
        seed_seconds=round(seed_seconds, 1),
        workers=workers,
        threads=THREADS,
        connections=options.connections,
        scenarios=results,
    )


def _bulk_export(service: Server, token: str) -> Figures:
    """The bulk-export scenario: one export of everything (see bench/bulk_export.py)."""
    found = bulk_export.run(service, token)
    figures = Figures(
        scenario=bulk_export.NAME,
        description=bulk_export.DESCRIPTION,
        requests=found["polls"] + found["files"] + 1,
        seconds=found["seconds"],
        requests_per_second=found["resources_per_second"],
        p50_ms=0.0,
        p95_ms=0.0,
        p99_ms=0.0,
        errors=found["errors"],
        peak_rss_mib=found["rss_peak_mib"],
        extra=found,
    )
    _say(
        f"  {bulk_export.NAME:<16} {found['resources']} resources in {found['export_seconds']} s "
        f"({found['resources_per_second']:.0f}/s; {found['with_downloads_per_second']:.0f}/s "
        f"with {found['files']} files downloaded, {found['mib']} MiB), server memory "
        f"{found['rss_before_mib']} → peak {found['rss_peak_mib']} MiB "
        f"(+{found['rss_growth_mib']} MiB)"
    )
    return figures


# --- growth and soak ---------------------------------------------------------------------


def run_growth(kind: str, options: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Read and search latency as the population grows, as ratios to the smallest."""
    rows: dict[int, dict[str, Figures]] = {}
    workers = options.workers or default_workers()
    for size in options.growth:
        patients = max(1, size * options.patients // options.episodes)
        _say(f"== growth on {kind}: {size} episodes, {patients} patients")
        url = _prepare_database(kind, size, patients, work, options.pg, options.reuse)
        database = Database(url)
        env = {**os.environ, "IPT_DATABASE_URL": url, "IPT_AUTO_MIGRATE": "false"}
        client_id, secret = register_client(env)
        with _service(url, workers, work / f"growth-{kind}-{size}.log") as service:
            token = fetch_token(service.url, client_id, secret)
            rows[size] = {
                s: _drive(s, service, database, token, options.duration, options.connections, work)
                for s in GROWTH_SCENARIOS
            }
        database.dispose()
    smallest = rows[min(rows)]
    return {
        "database": kind,
        "sizes": {
            str(size): {
                s: {
                    "p50_ms": f.p50_ms,
                    "p95_ms": f.p95_ms,
                    "requests_per_second": f.requests_per_second,
                    "p95_ratio": round(f.p95_ms / smallest[s].p95_ms, 2)
                    if smallest[s].p95_ms
                    else None,
                    "errors": f.errors,
                }
                for s, f in figures.items()
            }
            for size, figures in rows.items()
        },
    }


def run_soak(kind: str, options: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The CRUD mix for a long time: does the servers' memory grow after warm-up?"""
    _say(f"== soak on {kind}: crud-mix for {options.soak} s")
    url = _prepare_database(
        kind, options.episodes, options.patients, work, options.pg, options.reuse
    )
    database = Database(url)
    env = {**os.environ, "IPT_DATABASE_URL": url, "IPT_AUTO_MIGRATE": "false"}
    client_id, secret = register_client(env)
    workers = options.workers or default_workers()
    with _service(url, workers, work / f"soak-{kind}.log") as service:
        token = fetch_token(service.url, client_id, secret)
        data = write_lua(workload(database, token, options.connections), work / "soak-data.lua")
        with MemoryWatch(service, every=5.0) as memory:
            raw = _wrk("crud-mix", service, data, options.soak, options.connections, work)
    database.dispose()
    warm = [rss for at, rss in memory.samples if at >= min(60.0, options.soak / 5)]
    after_warmup, final = (warm[0], warm[-1]) if warm else (0.0, 0.0)
    figures = _figures("crud-mix", raw, memory.peak)
    return {
        "database": kind,
        "seconds": options.soak,
        "figures": asdict(figures),
        "rss_after_warmup_mib": round(after_warmup, 1),
        "rss_at_end_mib": round(final, 1),
        "growth_percent": round(100 * (final - after_warmup) / after_warmup, 1)
        if after_warmup
        else None,
        "samples": [(round(at), round(rss, 1)) for at, rss in memory.samples],
    }


def run_notified(kind: str, options: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Subscription notifications (bench/subscriptions.py) on a seeded database."""
    mode = "soak" if options.subscriptions_soak else "latency"
    _say(f"== subscriptions on {kind}: {mode}")
    url = _prepare_database(
        kind, options.episodes, options.patients, work, options.pg, options.reuse
    )
    env = {**os.environ, "IPT_DATABASE_URL": url, "IPT_AUTO_MIGRATE": "false"}
    return run_subscriptions(kind, url, options, work, register_client(env))


# --- reporting ---------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "wrk": wrk[0] if wrk else "wrk",
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark {report['started']}",
        "",
        f"`{report['command']}`",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"Python {report['machine']['python']}, {report['machine']['wrk']}.",
        "",
    ]
    for run in report["runs"]:
        lines += [
            f"## {run['database']}: {run['episodes']} episodes, {run['patients']} patients",
            "",
            f"Seeded in {run['seed_seconds']} s. Server: `ipt-careplans serve`, "
            f"{run['workers']} workers x {run['threads']} threads, authentication and audit on; "
            f"wrk with {run['connections']} connections.",
            "",
            "| scenario | req/s | p50 ms | p95 ms | p99 ms | errors | x floor | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for f in run["scenarios"]:
            ratio = "" if f["ratio_to_floor"] is None else f"{f['ratio_to_floor']:.2f}"
            name = f["scenario"]
            if f["extra"].get("resources_per_second"):
                name += f" ({f['extra']['resources']} resources, "
                name += f"{f['extra']['resources_per_second']:.0f}/s)"
            lines.append(
                f"| {name} | {f['requests_per_second']:.1f} | {f['p50_ms']:.1f} | "
                f"{f['p95_ms']:.1f} | {f['p99_ms']:.1f} | {f['errors']} | {ratio} | "
                f"{f['peak_rss_mib']:.0f} |"
            )
        lines.append("")
    for growth in report.get("growth", []):
        lines += [
            f"## Growth on {growth['database']} (p95 as a ratio to the smallest)",
            "",
            "| episodes | " + " | ".join(GROWTH_SCENARIOS) + " |",
            "|---:|" + "---:|" * len(GROWTH_SCENARIOS),
        ]
        for size, row in growth["sizes"].items():
            cells = [
                f"{row[s]['p95_ms']:.1f} ms ({row[s]['p95_ratio']}x)" for s in GROWTH_SCENARIOS
            ]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        lines.append("")
    for soak in report.get("soak", []):
        lines += [
            f"## Soak on {soak['database']}: crud-mix for {soak['seconds']} s",
            "",
            f"{soak['figures']['requests_per_second']:.1f} req/s, errors "
            f"{soak['figures']['errors']}; server memory {soak['rss_after_warmup_mib']} MiB "
            f"after warm-up, {soak['rss_at_end_mib']} MiB at the end "
            f"({soak['growth_percent']} %).",
            "",
        ]
    if report.get("subscriptions"):
        lines += [subscriptions_markdown(report["subscriptions"]), ""]
    return "\n".join(lines)


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 2) if base else None


def _say(message: str) -> None:
    print(message, flush=True)


def _sizes(text_value: str) -> list[int]:
    return sorted({int(part) for part in text_value.split(",") if part.strip()})


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=3_000)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="default: as `serve` picks")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql", "both"],
        default="both",
        help="both: PostgreSQL too when it answers at --pg",
    )
    parser.add_argument("--pg", default=os.environ.get("IPT_BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument(
        "--scenarios",
        default=",".join([*SCENARIOS, *STEPS]),
        help=f"wrk scenarios ({', '.join(SCENARIOS)}) and {', '.join(STEPS)}",
    )
    parser.add_argument("--history-changes", type=int, default=10_000)
    parser.add_argument(
        "--scored-plans",
        type=int,
        default=SCORED_PLANS,
        help="plans given a course of 40 scores for the progress scenario",
    )
    parser.add_argument("--export-limit", type=int, default=None)
    parser.add_argument("--growth", type=_sizes, default=[], help="e.g. 1000,10000,100000")
    parser.add_argument("--soak", type=float, default=0, help="seconds of crud-mix")
    parser.add_argument(
        "--subscriptions",
        type=float,
        default=0,
        help="seconds of Goal writes notified to subscriptions: latency from commit to receiver",
    )
    parser.add_argument(
        "--subscriptions-soak",
        type=float,
        default=0,
        help="seconds of the same with the receiver down now and then: checks none is lost",
    )
    parser.add_argument("--subscriptions-rate", type=float, default=50.0, help="writes/s")
    parser.add_argument("--subscriptions-subs", type=int, default=10, help="subscriptions")
    parser.add_argument("--receiver-down", type=float, default=30.0, help="seconds per outage")
    parser.add_argument("--down-every", type=float, default=120.0, help="seconds between outages")
    parser.add_argument("--poll-ms", type=int, default=200, help="IPT_SUBSCRIPTION_POLL_MS")
    parser.add_argument("--quick", action="store_true", help="small and short: a smoke check")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep a database an earlier run seeded with as many episodes (growth runs)",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    options = parser.parse_args(argv)
    options.scenarios = [s.strip() for s in options.scenarios.split(",") if s.strip()]
    unknown = set(options.scenarios) - set(SCENARIOS) - set(STEPS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if options.quick:
        # A smoke check: every scenario and every seeding path (prototypes written through
        # the service, then copies of them) on as little data as covers them; its figures
        # are never compared with anything.
        options.episodes, options.patients = QUICK_EPISODES, QUICK_PATIENTS
        options.duration, options.connections = 1.0, 4
        options.history_changes, options.export_limit = 300, 600
        options.scored_plans = 4
        options.scenarios = [s for s in options.scenarios if s not in STEPS]
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    if shutil.which("wrk") is None:
        _say("wrk is not installed: `apt-get install wrk` (Debian) first")
        return 2
    options.work.mkdir(parents=True, exist_ok=True)
    kinds = ["sqlite", "postgresql"] if options.database == "both" else [options.database]
    if "postgresql" in kinds and not _postgres_available(options.pg):
        if options.database == "postgresql":
            _say(f"PostgreSQL does not answer at {options.pg}")
            return 2
        _say(f"PostgreSQL does not answer at {options.pg}: SQLite only")
        kinds.remove("postgresql")
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _machine(),
        "runs": [],
    }
    notified = options.subscriptions or options.subscriptions_soak
    if not options.growth and not options.soak and not notified:
        report["runs"] = [asdict(run_database(kind, options, options.work)) for kind in kinds]
    if notified:
        report["subscriptions"] = [run_notified(kind, options, options.work) for kind in kinds]
    if options.growth:
        report["growth"] = [run_growth(kind, options, options.work) for kind in kinds]
    if options.soak:
        report["soak"] = [run_soak(kind, options, options.work) for kind in kinds]
    options.results.mkdir(parents=True, exist_ok=True)
    stem = options.results / (
        started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if options.quick else "")
    )
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report) + "\n")
    _say("\n" + markdown(report))
    _say(f"written: {stem.with_suffix('.json')} and .md")
    return 1 if _broken(report) else 0


def _broken(report: dict[str, Any]) -> bool:
    """Errors, or a scenario that made no request: what fails the quick mode in CI."""
    failed = False
    figures = [f for run in report["runs"] for f in run["scenarios"]]
    for growth in report.get("growth", []):
        figures += [
            {"scenario": f"growth {size} {s}", "requests": 1, **v}
            for size, row in growth["sizes"].items()
            for s, v in row.items()
        ]
    figures += [soak["figures"] for soak in report.get("soak", [])]
    for notified in report.get("subscriptions", []):
        if notified["lost"] or notified["write_errors"] or not notified["events_raised"]:
            _say(
                f"FAILED: subscriptions on {notified['database']}: {notified['lost']} events "
                f"lost, {notified['write_errors']} write errors, "
                f"{notified['events_raised']} events raised"
            )
            failed = True
    for f in figures:
        if f["errors"] or not f["requests"]:
            _say(f"FAILED: {f['scenario']}: {f['errors']} errors, {f['requests']} requests")
            failed = True
    return failed
