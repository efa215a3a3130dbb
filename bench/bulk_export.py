"""The bulk-export scenario: ``$export`` of the whole seeded database, as a bulk data
client runs it (kick-off, status polls, every file downloaded), with the resources per
second and the server's memory growth (resident memory of the server and its workers
before the kick-off, at its peak, and after the downloads)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from bench.processes import MemoryWatch, Server

NAME = "bulk-export"
DESCRIPTION = "$export of every resource: kick-off, status polls, every NDJSON file downloaded"
# Small exports (of the Flags) before the one measured.
WARM_UPS = 4


def _request(server: Server, path: str, token: str, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {token}", **headers}
    )
    return urllib.request.urlopen(request, timeout=120)


def _export(server: Server, token: str, query: str) -> tuple[dict[str, Any], float, int, int, int]:
    """One export, its files downloaded: the manifest, when it came (``perf_counter``), the
    status polls, the resources downloaded and their bytes."""
    path = "/fhir/$export" + (f"?{query}" if query else "")
    with _request(server, path, token, {"Prefer": "respond-async"}) as answer:
        status = answer.headers["Content-Location"].removeprefix(server.url)
    polls = 0
    while True:
        with _request(server, status, token, {"Accept": "application/json"}) as answer:
            polls += 1
            if answer.status == 200:
                manifest = json.loads(answer.read())
                break
        time.sleep(0.2)
    complete = time.perf_counter()
    downloaded = size = 0
    for item in manifest["output"]:
        path = item["url"].removeprefix(server.url)
        with _request(server, path, token, {"Accept": "application/fhir+ndjson"}) as answer:
            while chunk := answer.read(1 << 20):
                size += len(chunk)
                downloaded += chunk.count(b"\n")
    return manifest, complete, polls, downloaded, size


def run(server: Server, token: str) -> dict[str, Any]:
    """Export everything; the figures (see the module's docstring). Small exports come
    first, so that every worker has answered each export route once: the growth measured
    is the export's, not a worker's first requests."""
    for _ in range(WARM_UPS):
        _export(server, token, "_type=Flag")
    before = server.rss_mib()
    started = time.perf_counter()
    with MemoryWatch(server) as memory:
        manifest, complete, polls, downloaded, size = _export(server, token, "")
        total = time.perf_counter() - started
    exported = complete - started
    after = server.rss_mib()
    resources = sum(item["count"] for item in manifest["output"])
    return {
        "resources": resources,
        "downloaded": downloaded,
        "files": len(manifest["output"]),
        "mib": round(size / 2**20, 1),
        "export_seconds": round(exported, 2),
        "warm_ups": WARM_UPS,
        "seconds": round(total, 2),
        "resources_per_second": round(resources / exported, 1) if exported else 0.0,
        "with_downloads_per_second": round(resources / total, 1) if total else 0.0,
        "polls": polls,
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(memory.peak, 1),
        "rss_after_mib": round(after, 1),
        "rss_growth_mib": round(memory.peak - before, 1),
        "errors": int(resources != downloaded),
    }
