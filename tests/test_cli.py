"""The ``ipt-careplans`` command as an administrator uses it: its help, its version, the
database it names, and the credentials it prints for scripts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import click
import pytest
import requests
from click.testing import CliRunner
from conftest import ROOT, Client
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from api.cli import main
from api.config import Settings

pytestmark = pytest.mark.slow

READ_ONLY_COMMANDS = [
    ["token", "--client", "admin"],
    ["clients", "list"],
    ["clients", "revoke", "admin"],
    ["clients", "rotate-secret", "admin"],
    ["keys", "list"],
    ["keys", "rotate"],
    ["check-config"],
    ["db", "downgrade", "base"],
    ["report", "outcomes", "--from", "2026-01-01", "--to", "2026-06-30"],
]


def cli(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ipt-careplans ARGS`` in a child process, in ``cwd``, with only ``env`` configuring it."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("IPT_")}
    environment["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def command_paths(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group of the CLI, as the words that name it."""
    yield path
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_paths(command, (*path, name))
        else:
            yield (*path, name)


# Markup that means something to a documentation tool and nothing in a terminal.
MARKUP = re.compile(r"`|\\b|\x08|:(func|class|meth|ref):|\*\*|::\s*$|^\s*\.\. ", re.MULTILINE)


@pytest.mark.parametrize("path", list(command_paths(main)), ids=" ".join)
def test_every_help_text_is_plain_text(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="ipt-careplans")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ipt-careplans")
    assert MARKUP.search(result.output) is None, result.output
    described = result.output.split("\n\n", 2)
    assert len(described) >= 2 and described[1].strip(), f"{path} has no description"


def test_the_version_is_the_packages() -> None:
    result = cli("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ipt-careplans {metadata.version('ipt-careplans')}\n"


def test_flasks_own_options_are_not_offered() -> None:
    shown = cli("--help").stdout

    for option in ("--env-file", "--app", "--debug", "-A,", "-e,"):
        assert option not in shown
    refused = cli("--app", "elsewhere:app", "--version")
    assert refused.returncode == 2
    assert "No such option '--app'" in refused.stderr


def test_token_help_says_how_long_a_token_lasts() -> None:
    minutes = Settings.token_lifetime_seconds // 60

    shown = " ".join(cli("token", "--help").stdout.split())

    assert f"lasts IPT_TOKEN_LIFETIME_SECONDS (default {minutes} minutes)" in shown


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=" ".join)
def test_a_command_that_reads_never_creates_a_database(tmp_path: Path, command: list[str]) -> None:
    result = cli(*command, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    expected = tmp_path.resolve() / "ipt-careplans.db"
    assert f"database: sqlite:///{expected}" in result.stderr
    assert f"no database at {expected}" in result.stderr
    assert "IPT_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_db_current_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    result = cli("db", "current", cwd=tmp_path)

    assert result.returncode == 1
    assert "current: none" in result.stdout
    assert "(no such file)" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_database_is_named_without_its_password(tmp_path: Path) -> None:
    # Nothing listens on port 1: the command fails after naming the database.
    url = "postgresql://ipt:s3cret-pw@127.0.0.1:1/careplans?password=s3cret-pw"

    result = cli("clients", "list", env={"IPT_DATABASE_URL": url})

    assert result.returncode != 0
    assert "database: postgresql://ipt@127.0.0.1:1/careplans" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_a_token_for_an_unknown_client_names_the_database(database_url: str) -> None:
    result = cli("token", "--client", "nobody", env={"IPT_DATABASE_URL": database_url})

    assert result.returncode == 1
    assert "no active client is named 'nobody' in the database at" in result.stderr


def _grant(server: str, client_id: str, secret: str) -> requests.Response:
    return requests.post(
        f"{server}/auth/token",
        auth=(client_id, secret),
        data={"grant_type": "client_credentials", "scope": "system/CarePlan.rs"},
        timeout=30,
    )


@pytest.mark.parametrize(
    "script",
    [
        'eval "$(ipt_careplans clients create --name {name} --scopes system/CarePlan.rs '
        '--format env)"',
        "export $(ipt_careplans clients create --name {name} --scopes system/CarePlan.rs "
        "--format env)",
    ],
    ids=["eval", "export"],
)
def test_clients_create_prints_variables_a_shell_sets(
    client: Client, database_url: str, script: str
) -> None:
    name = "shell-script"
    shell = (
        f'ipt_careplans() {{ "{sys.executable}" -m api.cli "$@"; }}\n'
        + script.format(name=name)
        + '\nprintf "%s\\n%s\\n" "$IPT_CLIENT_ID" "$IPT_CLIENT_SECRET"'
    )
    environment = {name: value for name, value in os.environ.items() if not name.startswith("IPT_")}

    result = subprocess.run(
        ["bash", "-c", shell],
        capture_output=True,
        text=True,
        env={**environment, "PYTHONPATH": str(ROOT), "IPT_DATABASE_URL": database_url},
        cwd=ROOT,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    client_id, secret = result.stdout.splitlines()
    assert client_id and secret
    assert "The secret is shown only now" in result.stderr
    assert _grant(client.base_url, client_id, secret).status_code == 200


def test_clients_create_prints_json(client: Client, database_url: str, tmp_path: Path) -> None:
    created = cli(
        "clients", "create", "--name", "json-script", "--scopes", "system/CarePlan.rs",
        "--patient", "Patient/7", "--format", "json", env={"IPT_DATABASE_URL": database_url},
    )  # fmt: skip

    assert created.returncode == 0, created.stderr
    document = json.loads(created.stdout)
    assert document["name"] == "json-script"
    assert document["scopes"] == ["system/CarePlan.rs"]
    assert document["patient"] == "Patient/7"
    granted = _grant(client.base_url, document["client_id"], document["client_secret"])
    assert granted.status_code == 200


def test_a_client_with_keys_has_no_secret_to_print(database_url: str, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    key = ec.generate_private_key(ec.SECP256R1())
    jwks.write_text(json.dumps({"keys": [ECAlgorithm.to_jwk(key.public_key(), as_dict=True)]}))
    env = {"IPT_DATABASE_URL": database_url}

    as_env = cli(
        "clients", "create", "--name", "signer", "--scopes", "system/CarePlan.rs",
        "--jwks", str(jwks), "--format", "env", env=env,
    )  # fmt: skip
    as_json = cli(
        "clients", "create", "--name", "signer-2", "--scopes", "system/CarePlan.rs",
        "--jwks", str(jwks), "--format", "json", env=env,
    )  # fmt: skip

    assert as_env.returncode == 0, as_env.stderr
    assert re.fullmatch(r"IPT_CLIENT_ID=[0-9a-f-]+\n", as_env.stdout)
    assert json.loads(as_json.stdout)["client_secret"] is None


def test_an_unknown_format_is_refused(database_url: str) -> None:
    result = cli(
        "clients", "create", "--name", "x", "--scopes", "system/CarePlan.rs", "--format", "yaml",
        env={"IPT_DATABASE_URL": database_url},
    )  # fmt: skip

    assert result.returncode == 2
    assert "'yaml' is not one of 'text', 'env', 'json'" in result.stderr
