"""The README's walk-through and security sections, run in bash as a reader runs them.

Their commands run unchanged except for where they reach: ``.venv/bin/ipt-careplans`` is
this checkout's command on the test database, and ``http://127.0.0.1:8000`` the live test
server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT, Client

SECTIONS = ("## A walk-through with curl", "## Security")


def shell_blocks(heading: str) -> list[str]:
    """The ```sh blocks of one section of the README, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def run_sections(server: str, database_url: str) -> subprocess.CompletedProcess[str]:
    script = "\n".join(block for heading in SECTIONS for block in shell_blocks(heading))
    script = script.replace(".venv/bin/ipt-careplans", "ipt_careplans")
    script = script.replace("http://127.0.0.1:8000", server)
    prelude = f'set -euo pipefail\nipt_careplans() {{ "{sys.executable}" -m api.cli "$@"; }}\n'
    environment = {name: value for name, value in os.environ.items() if not name.startswith("IPT_")}
    return subprocess.run(
        ["bash", "-c", prelude + script],
        capture_output=True,
        text=True,
        env={**environment, "PYTHONPATH": str(ROOT), "IPT_DATABASE_URL": database_url},
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def items(client: Client, path: str, **query: Any) -> list[dict[str, Any]]:
    response = client.get(path, params={**query, "page_size": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl")
def test_the_readme_walk_through_runs_as_written(client: Client, database_url: str) -> None:
    result = run_sections(client.base_url, database_url)

    assert result.returncode == 0, result.stdout + result.stderr
    (plan,) = items(client, "/api/v1/care-plans", patient="Patient/123")
    assert plan["planned_sessions"] == 16
    assert len(plan["contract_history"]) == 2
    (homework,) = items(client, f"/api/v1/care-plans/{plan['id']}/homework")
    assert homework["status"] == "completed"
    (session,) = items(client, f"/api/v1/care-plans/{plan['id']}/sessions")
    assert session["phq9_total"] == 17
    scores = items(client, f"/api/v1/care-plans/{plan['id']}/administrations")
    assert [(a["source"], a["total"]) for a in scores] == [("total-only", 17), ("items", 11)]
    symptom = next(
        g for g in items(client, f"/api/v1/care-plans/{plan['id']}/goals") if g["kind"] == "symptom"
    )
    assert symptom["achievement_status"] == "improving"
    # The security section: the EHR's secret took a token, the auditor read the trail.
    assert '"access_token"' in result.stdout
    assert '"resourceType":"Bundle"' in result.stdout.replace(" ", "")
    assert "AuditEvent" in result.stdout
