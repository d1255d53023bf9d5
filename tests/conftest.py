"""Shared fixtures: a tiny digits pipeline, trained once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "studies" / "digits.toml"
os.environ.pop("GAFI_STORAGE", None)  # every command reads it: a developer's exported storage must not catch the tests' runs

# A whole pipeline in well under a minute on a 2-core CPU: tiny models, few epochs, two points per grid.
TINY = [
    "generator.epochs=3",
    "generator.width=32",
    "filter.epochs=2",
    "filter.width=8",
    "cas.epochs=2",
    "cas.width=8",
    "checkpoint.values=[2, 3]",
    "stddev.values=[1.0, 1.5]",
    "threshold.values=[0.0, 0.5]",
    "final.seeds=2",
    "synth.samples_per_class=40",
]


def tiny_overrides(run_dir: Path, name: str = "tiny") -> list[str]:
    return [*TINY, f"name={name}", f"run_dir={run_dir}"]


def assert_user_error(result, *fragments) -> str:
    """A CLI result that is bad input told in one line: exit status 2, `gafi-opt: error: ...` naming each
    fragment, no traceback; returns the line."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("gafi-opt: error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Tests run beside each other on small machines; one thread avoids oversubscription.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A finished tiny digits pipeline: (spec, storage URL) after `gafi-opt run`."""
    from click.testing import CliRunner

    from gafi_opt.cli import main
    from gafi_opt.spec import load_spec

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    overrides = tiny_overrides(run_dir)
    args = ["run", str(DIGITS), "--quiet"] + [arg for o in overrides for arg in ("--set", o)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    spec = load_spec(DIGITS, overrides)
    return spec, spec.storage_url


@pytest.fixture
def byo_checkpoints(tiny_pipeline, tmp_path):
    """The tiny pipeline's checkpoints (epochs 1-3) as a 'bring your own' folder, and the run's overrides."""
    import shutil

    spec, _ = tiny_pipeline
    folder = tmp_path / "ckpts"
    shutil.copytree(spec.run_path / "generator", folder, ignore=shutil.ignore_patterns("state.pt*"))
    shutil.copy(spec.run_path / "filter.pt", tmp_path / "filter.pt")
    overrides = tiny_overrides(tmp_path, "byo") + [f"generator.checkpoints={folder}"]
    return folder, overrides


@pytest.fixture(scope="session")
def tiny_paper_pipeline(tiny_pipeline):
    """The tiny pipeline again under the paper's argmax rule (on val), in a storage of its own but the same run
    directory (so only its trials train): (spec, storage URL)."""
    from click.testing import CliRunner

    from gafi_opt.cli import main
    from gafi_opt.spec import load_spec

    spec, _ = tiny_pipeline
    url = f"sqlite:///{spec.run_path.parent / 'paper.db'}"  # its own storage: the tiny one keeps one pipeline
    overrides = [*tiny_overrides(spec.run_path, name="tiny-paper"), *(f"{s}.rule=argmax" for s in ("checkpoint", "stddev", "threshold"))]
    args = ["run", str(DIGITS), "--quiet", "--storage", url] + [arg for o in overrides for arg in ("--set", o)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return load_spec(DIGITS, overrides), url


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the PostgreSQL server at 127.0.0.1:5432 (or $GAFI_TEST_POSTGRES, host:port)
    for this test run, dropped afterwards.

    Without a server the tests that need it are skipped, except under CI (CI=true), where
    they fail: CI must test the real thing (.ci/services.sh starts the server).
    """
    import os
    import uuid

    import psycopg

    host, port = os.environ.get("GAFI_TEST_POSTGRES", "127.0.0.1:5432").rsplit(":", 1)
    admin, user, errors = None, None, []
    for user in ("postgres", "root"):
        for dbname in ("test", "postgres"):
            try:
                admin = psycopg.connect(host=host, port=int(port), user=user, dbname=dbname, autocommit=True, connect_timeout=5)
                break
            except psycopg.OperationalError as exc:
                errors.append(" ".join(str(exc).split()))
        if admin is not None:
            break
    if admin is None:
        message = f"no PostgreSQL server usable at {host}:{port} (run .ci/services.sh): {errors[-1] if errors else ''}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"gafi_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        try:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.OperationalError:  # a test restarted the server: this connection went with it
            with psycopg.connect(host=host, port=int(port), user=user, dbname=dbname, autocommit=True, connect_timeout=5) as again:
                again.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def grpc_proxy(tmp_path):
    """`gafi-opt storage-proxy` in front of an SQLite file: (grpc URL, process); stopped with SIGTERM afterwards."""
    import signal
    import subprocess
    import sys

    port = free_port()
    command = [sys.executable, "-m", "gafi_opt.cli", "storage-proxy", "--storage", f"sqlite:///{tmp_path / 'proxied.db'}", "--port", str(port)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    yield f"grpc://127.0.0.1:{port}", process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
