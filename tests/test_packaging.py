"""Packaging a user can trust: the licence file says what pyproject.toml says, and the dependency bounds
admit what is installed and refuse what the code cannot run with."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.version import Version

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement(name: str, extra: str | None = None) -> Requirement:
    listed = PROJECT["optional-dependencies"][extra] if extra else PROJECT["dependencies"]
    (found,) = [Requirement(text) for text in listed if Requirement(text).name == name]
    return found


def floor(req: Requirement) -> Version:
    (lowest,) = [Version(spec.version) for spec in req.specifier if spec.operator == ">="]
    return lowest


def optuna_file(relative: str) -> str:
    return (Path(importlib.util.find_spec("optuna").origin).parent / relative).read_text()


def test_the_licence_is_mit_and_names_its_holder():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the gafi-opt authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]  # superseded by the SPDX expression


def test_metadata_a_user_reads():
    assert PROJECT["urls"] and all(url.startswith("https://") for url in PROJECT["urls"].values())
    assert "Typing :: Typed" in PROJECT["classifiers"] and (ROOT / "gafi_opt" / "py.typed").exists()
    python = re.search(r">=(\d+\.\d+)", PROJECT["requires-python"]).group(1)
    assert f"Programming Language :: Python :: {python}" in PROJECT["classifiers"]


def test_optuna_is_capped_below_the_next_major():
    """gafi_opt.storages imports Optuna internals (optuna.storages._rdb.models, optuna.storages._heartbeat)."""
    optuna = requirement("optuna")
    (cap,) = [Version(spec.version) for spec in optuna.specifier if spec.operator == "<"]
    installed = Version(importlib.metadata.version("optuna"))
    assert optuna.specifier.contains(installed), installed
    assert cap == Version(str(installed.major + 1))  # the major the suite runs on, not one it never saw
    for internal in ("optuna.storages._rdb.models", "optuna.storages._heartbeat"):
        assert importlib.util.find_spec(internal) is not None


@pytest.mark.parametrize("extra", ["grpc", "test"])
def test_grpc_floors_are_what_optunas_generated_code_demands(extra):
    """Optuna's gRPC storage proxy refuses grpcio and protobuf older than the versions its code was generated with."""
    grpc_generated = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", optuna_file("storages/_grpc/auto_generated/api_pb2_grpc.py")).group(1)
    protobuf_generated = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
        optuna_file("storages/_grpc/auto_generated/api_pb2.py"),
    ).groups()
    assert floor(requirement("grpcio", extra)) >= Version(grpc_generated)
    assert floor(requirement("protobuf", extra)) >= Version(".".join(protobuf_generated))
    # What is installed satisfies the bounds, and Optuna's proxy imports with it.
    for name in ("grpcio", "protobuf"):
        assert requirement(name, extra).specifier.contains(importlib.metadata.version(name))
    from optuna.storages._grpc import client, server  # noqa: F401 - the import is the check
