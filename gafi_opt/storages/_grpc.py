"""Optuna's gRPC storage proxy: the client workers use, and the server `gafi-opt storage-proxy` runs."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Container

import optuna
from optuna.trial import FrozenTrial, TrialState

from gafi_opt.errors import GafiError
from gafi_opt.storages.atomic import TAS_PREFIX
from gafi_opt.storages.guard import guard_storage_class
from gafi_opt.storages.urls import redact

GRPC_CONNECT_TIMEOUT_S = 10


def open_grpc(url: str) -> "FreshGrpcStorageProxy":
    host, _, port = url.removeprefix("grpc://").rstrip("/").partition(":")
    try:
        port_number = int(port or 13000)
    except ValueError:
        raise GafiError(f"not a gRPC storage URL: {redact(url)} (expected grpc://host:port)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = FreshGrpcStorageProxy(host=host or "localhost", port=port_number)
    try:
        storage.wait_server_ready(timeout=GRPC_CONNECT_TIMEOUT_S)
    except ConnectionError:
        raise GafiError(
            f"no gRPC storage proxy answers at {host or 'localhost'}:{port_number} (start one with `gafi-opt storage-proxy`)"
        ) from None
    return storage


@guard_storage_class
class FreshGrpcStorageProxy(optuna.storages.GrpcStorageProxy):
    """Optuna's gRPC client, reading each study's trials afresh, and checking the proxy's TAS support.

    Its cache fetches only trials after the last finished id, so a trial committed late by a
    concurrent transaction could stay invisible; stages hold tens of trials, a full read is cheap.
    """

    _tas_checked = False

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        self._cache.delete_study_cache(study_id)
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def set_study_system_attr(self, study_id: int, key: str, value) -> None:
        if key.startswith(TAS_PREFIX) and not self._tas_checked:
            self._check_tas(study_id)
        super().set_study_system_attr(study_id, key, value)

    def _check_tas(self, study_id: int) -> None:
        """A plain Optuna proxy overwrites attrs (last writer wins); ours keeps the first value."""
        key = TAS_PREFIX + "probe"
        first, second = f"probe-{uuid.uuid4()}", f"probe-{uuid.uuid4()}"
        super().set_study_system_attr(study_id, key, first)
        super().set_study_system_attr(study_id, key, second)
        if super().get_study_system_attrs(study_id).get(key) == second:
            raise GafiError(
                f"the gRPC proxy at {self._host}:{self._port} overwrites attributes, so workers cannot claim trials "
                "atomically through it: start it with `gafi-opt storage-proxy`"
            )
        self._tas_checked = True
