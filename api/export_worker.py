"""The background runner of bulk export jobs in this process.

It starts with the first kick-off or status poll the process answers, then takes up jobs
one after another: those asked for anywhere, and those whose process died (their lease ran
out). It waits between looks, and is woken at once by a kick-off here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid

from api.config import Settings
from api.fhir.export_request import filters, operation_outcome_lines
from service import export_jobs
from service.db import Database
from service.export_jobs import Lease, LeaseLost
from service.models import ExportJob

log = logging.getLogger("ipt_careplans.export")

# How long the runner waits between looks for work when nobody wakes it.
POLL_SECONDS = 2.0


class ExportWorker:
    """One thread per process running export jobs, started when first needed."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self.owner = ""

    def poke(self) -> None:
        """Make sure the thread runs (in this process: a forked one starts its own), and
        have it look for work now."""
        if not self.settings.export_worker or self._stopping:
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self.owner = f"{socket.gethostname()[:30]}:{self._pid}:{uuid.uuid4().hex[:12]}"
                self._thread = threading.Thread(target=self._loop, name="ipt-export", daemon=True)
                self._thread.start()
        self.wake.set()

    def _loop(self) -> None:
        failing = False
        while not self._stopping:
            try:
                export_jobs.purge_expired(self.database)
                ran = self.run_one()
                failing = False
                if ran:
                    continue
            except Exception:
                # Logged once per streak of failures (the database down, say), not every look.
                if not failing:
                    log.exception("looking for export jobs failed; retrying")
                failing = True
            self.wake.wait(POLL_SECONDS)
            self.wake.clear()

    def stop(self) -> None:
        """Stop looking for jobs once the job in hand, if any, ends (its lease then runs
        out and another process takes it up)."""
        self._stopping = True
        self.wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=10)

    def run_one(self) -> bool:
        """Claim a job and run it; False when there was none to claim."""
        lease = Lease(self.owner or f"{socket.gethostname()[:30]}:{os.getpid()}", self._lease())
        job = export_jobs.claim(self.database, lease)
        if job is None:
            return False
        run_job(self.database, job, lease)
        return True

    def _lease(self) -> int:
        return self.settings.export_lease_seconds


def run_job(database: Database, job: ExportJob, lease: Lease) -> None:
    """Run a claimed job to its end; a failure is recorded on the job without its cause's
    text (which could quote patient data), and logged."""
    try:
        by_type = filters(job.type_filters, job.owner_patient)
        outcomes = operation_outcome_lines(job.warnings)
        export_jobs.run(database, job, lease, by_type.get, outcomes)
    except LeaseLost:
        log.info("export job stopped: cancelled, expired or taken over", extra={"job": job.id})
    except Exception:
        log.exception("export job failed", extra={"job": job.id})
        with contextlib.suppress(LeaseLost):
            export_jobs.fail(database, job.id, lease, "the export failed on the server")
