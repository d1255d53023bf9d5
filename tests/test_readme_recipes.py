"""The README's cluster recipes, read as a person would copy them: every gafi-opt command in the Slurm
scripts and the Kubernetes manifest parses with gafi-opt's own command line, and the pieces fit together
(the workers join the pipeline the first run creates, and see its run directory at the same path)."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

import click
import pytest
import yaml
from conftest import ROOT

from gafi_opt.cli import STORAGE_ENV, main
from gafi_opt.spec import load_spec

README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def block_with(language: str, marker: str) -> str:
    (block,) = [b for b in code_blocks(language) if marker in b]
    return block


def parse(argv: list[str]) -> tuple[str, dict]:
    """A gafi-opt command line through click's parser (no command runs): the command's name and its parameters."""
    assert argv[0] == "gafi-opt", argv
    name = argv[1]
    assert name in main.commands, f"no command {name!r}"
    try:
        with main.commands[name].make_context(f"gafi-opt {name}", list(argv[2:])) as ctx:
            return name, dict(ctx.params)
    except click.UsageError as exc:
        pytest.fail(f"{shlex.join(argv)}: {exc.format_message()}")


def shell_commands(script: str) -> list[list[str]]:
    """The script's command lines as words (continuations joined, comments dropped)."""
    joined = script.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


def gafi_opt_lines(script: str) -> list[list[str]]:
    """Every gafi-opt command in a shell script, including one inside `sbatch --wrap "..."`."""
    found = []
    for words in shell_commands(script):
        words = [w.removeprefix("jid=$(") for w in words]
        if words[0] == "gafi-opt":
            found.append(words)
        for i, word in enumerate(words):
            if word == "--wrap":
                found.append(shlex.split(words[i + 1].rstrip(")")))
    return found


def exported(script: str, variable: str) -> str:
    (value,) = [words[1].split("=", 1)[1] for words in shell_commands(script) if words[0] == "export" and words[1].startswith(f"{variable}=")]
    return value


def sets(params: dict) -> dict:
    return dict(override.split("=", 1) for override in params["overrides"])


def pipeline_of_run(params: dict) -> str:
    """The pipeline a `gafi-opt run` creates: its study file's name unless --set name=... says otherwise."""
    return load_spec(ROOT / params["study_file"], list(params["overrides"])).name


def test_slurm_recipe(monkeypatch):
    submit = block_with("bash", "sbatch --dependency")
    workers = block_with("bash", "#SBATCH --array=0-7")
    assert workers.startswith("#!/bin/bash\n")
    directives = dict(line.removeprefix("#SBATCH ").split("=", 1) for line in workers.splitlines() if line.startswith("#SBATCH "))
    assert directives["--array"] == "0-7" and directives["--gres"] == "gpu:1"
    for script in (submit, workers):  # each exports the storage its gafi-opt lines then read
        url = exported(script, STORAGE_ENV)
        assert url.startswith("postgresql+psycopg://") and ":" not in url.split("//")[1].split("@")[0]  # no password: ~/.pgpass
    monkeypatch.setenv(STORAGE_ENV, exported(submit, STORAGE_ENV))
    ((run_name, run),) = [parse(argv) for argv in gafi_opt_lines(submit)]
    assert run_name == "run" and run["storage"] == exported(submit, STORAGE_ENV)
    ((worker_name, worker),) = [parse(argv) for argv in gafi_opt_lines(workers)]
    assert worker_name == "worker" and worker["name"] == pipeline_of_run(run) and worker["storage"] == run["storage"]
    assert int(directives["--cpus-per-task"]) == worker["threads"]
    assert PurePosixPath(sets(run)["run_dir"]).is_absolute() and PurePosixPath(sets(run)["data.root"]).is_absolute()
    assert "gafi-workers.sbatch" in submit and "--wrap" in submit


def test_kubernetes_manifest(monkeypatch):
    documents = list(yaml.safe_load_all(block_with("yaml", "kind: Job")))
    assert [d["kind"] for d in documents] == ["Job", "Job"] and all(d["apiVersion"] == "batch/v1" for d in documents)
    prepare, workers = documents
    assert workers["spec"]["parallelism"] == 8 and "completions" not in workers["spec"]
    parsed = {}
    for job in documents:
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (env,) = container["env"]
        assert env["name"] == STORAGE_ENV and env["valueFrom"]["secretKeyRef"] == {"name": "gafi-storage", "key": "url"}
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        (mount,) = container["volumeMounts"]
        (volume,) = pod["volumes"]
        assert mount["name"] == volume["name"] and volume["persistentVolumeClaim"]["claimName"] == "gafi-shared"
        monkeypatch.setenv(STORAGE_ENV, "postgresql+psycopg://gafi:secret@db-host/gafi")  # what the Secret holds
        parsed[job["metadata"]["name"]] = (parse(container["command"]), mount["mountPath"])
    (run_name, run), run_mount = parsed[prepare["metadata"]["name"]]
    (worker_name, worker), worker_mount = parsed[workers["metadata"]["name"]]
    assert (run_name, worker_name) == ("run", "worker") and worker["name"] == pipeline_of_run(run)
    assert run_mount == worker_mount  # the same claim at the same path in every pod ...
    for key in ("run_dir", "data.root"):  # ... under which the run puts its models and data
        assert PurePosixPath(sets(run)[key]).is_relative_to(run_mount)
