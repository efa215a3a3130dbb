"""Every command the chart's release notes print and the deployment documents show, run as
written against a live server.

The commands are taken from the rendered NOTES.txt and from the ```sh blocks of
docs/deployment.md and docs/operations.md. Those that call the service (curl, and the
`ipt-careplans` command run in a pod or a container) run in bash, in order, as an operator
would: the public URL replaced by the live server's, `kubectl exec …  --` and
`docker run … <image>` replaced by running the command where the database is, and
CLIENT_ID, CLIENT_SECRET and ACCESS_TOKEN set from what the previous commands printed.
Every other command must be one known not to call the service, so a new command cannot
slip by untried.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from tests.conftest import ROOT, Server
from tests.test_chart import BASE, CHART, NAMESPACE, RELEASE, merged

pytestmark = pytest.mark.slow

# The public URLs the notes and the documents use for the service.
PUBLIC_URLS = ("https://careplans.example.org", "https://ipt.example.org")
# Commands that do not call the service: cluster, build and key management (a program and
# one of its words, or the program alone).
NOT_THE_SERVICE = {
    "kubectl": ("create", "port-forward", "rollout"),
    "helm": ("upgrade", "lint", "template"),
    "docker": ("build", "pull", "inspect"),
    "openssl": None,
    "rm": None,
    ".venv/bin/pytest": None,
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


def notes(chart: Any, values: dict[str, Any]) -> list[str]:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    text = rendered["ipt-careplans/templates/NOTES.txt"]
    # The commands are the indented lines that start with a program's name.
    command = re.compile(r"^ {3,}(curl|kubectl|helm|docker|ipt-careplans) ")
    return [line.strip() for line in text.splitlines() if command.match(line)]


def documented(path: Path) -> list[str]:
    """The commands of the document's ```sh blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            if command.strip() and not command.strip().startswith("#"):
                commands.append(command.strip())
    return commands


def local(command: str) -> str | None:
    """The command as run against the test server, or None for one that does not call it."""
    evaluated = re.fullmatch(r'eval "\$\((.*)\)"', command)
    if evaluated:
        # `eval "$(cmd)"` sets the variables cmd prints: cmd is run, and they are read.
        inner = local(evaluated.group(1))
        return None if inner is None else f"eval {inner}"
    words = shlex.split(command)
    if words[0] == "kubectl" and "exec" in words:
        # `kubectl … exec deploy/x -- cmd`: the pod runs cmd with the service's settings.
        command = command.split(" -- ", 1)[1]
    elif words[:2] == ["docker", "run"]:
        # `docker run [options] ipt-careplans [args]`: the image's entry point is the command.
        if words[-1] == "ipt-careplans":
            return None  # no arguments: it starts the server, which the live server stands for
        command = command[command.index(" ipt-careplans ") + 1 :]
    elif words[0] in NOT_THE_SERVICE:
        subcommands = NOT_THE_SERVICE[words[0]]
        assert subcommands is None or set(subcommands) & set(words), f"unknown: {command}"
        return None
    assert command.split()[0] in ("curl", "ipt-careplans"), f"a command not known: {command}"
    return command


def run_as_an_operator(commands: list[str], live: Server, database_url: str) -> list[str]:
    """Run the commands that call the service in order; the ones run, as written."""
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "IPT_DATABASE_URL": database_url,
        "IPT_LOG_LEVEL": "WARNING",
    }
    ran = []
    for command in commands:
        runnable = local(command)
        if runnable is None:
            continue
        for url in PUBLIC_URLS:
            runnable = runnable.replace(url, live.url)
        evaluated = runnable.startswith("eval ")
        if evaluated:
            runnable = runnable.removeprefix("eval ")
        result = subprocess.run(
            ["bash", "-c", runnable],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        if evaluated:
            for name, value in re.findall(r"^(\w+)=(.*)$", result.stdout, re.M):
                env[name] = shlex.split(value)[0]
        printed = dict(re.findall(r"^(client_id|client_secret): (\S+)$", result.stdout, re.M))
        if printed:
            env["CLIENT_ID"] = printed.get("client_id", env.get("CLIENT_ID", ""))
            env["CLIENT_SECRET"] = printed["client_secret"]
        if "/auth/token" in runnable:
            answer = json.loads(result.stdout)
            assert answer["token_type"] == "Bearer"
            env["ACCESS_TOKEN"] = answer["access_token"]
        ran.append(command)
    return ran


NOTES_VALUES = {
    "no ingress": BASE,
    "ingress": merged(
        BASE,
        {"ingress": {"enabled": True, "tls": [{"secretName": "t", "hosts": ["careplans.x"]}]}},
    ),
}


@pytest.mark.parametrize("case", sorted(NOTES_VALUES))
def test_release_notes_commands_work_as_printed(
    chart: Any, live: Server, database_url: str, case: str
) -> None:
    ran = run_as_an_operator(notes(chart, NOTES_VALUES[case]), live, database_url)
    assert [c.split()[0] for c in ran] == ["curl", "kubectl", "curl", "curl"]
    assert "scope=" in ran[2]


def test_deployment_guide_commands_work_as_shown(live: Server, database_url: str) -> None:
    ran = run_as_an_operator(documented(ROOT / "docs" / "deployment.md"), live, database_url)
    assert len(ran) == 3
    assert "clients create" in ran[0] and "/auth/token" in ran[1] and "/fhir/CarePlan" in ran[2]


def test_operations_guide_commands_work_as_shown(live: Server, database_url: str) -> None:
    ran = run_as_an_operator(documented(ROOT / "docs" / "operations.md"), live, database_url)
    assert [" ".join(c.split()[-3:]) for c in ran][:1] == ["ipt-careplans db upgrade"]
    assert any("clients create" in c for c in ran)


def test_the_token_command_without_its_scope_is_refused(
    chart: Any, live: Server, database_url: str
) -> None:
    """What the notes used to print: without the scope the token endpoint answers 400."""
    [token_command] = [line for line in notes(chart, BASE) if "/auth/token" in line]
    without_scope = re.sub(r' --data-urlencode "scope=[^"]*"', "", token_command)
    assert without_scope != token_command
    create = "ipt-careplans clients create --name admin --scopes system/CarePlan.rs"
    with pytest.raises(AssertionError, match="scope is required"):
        run_as_an_operator([create, without_scope], live, database_url)
