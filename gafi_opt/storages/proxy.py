"""`gafi-opt storage-proxy`: an RDB storage served to workers through Optuna's gRPC storage proxy."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import optuna

from gafi_opt.errors import GafiError
from gafi_opt.storages.opening import open_storage
from gafi_opt.storages.urls import is_journal, redact


def serve_proxy(url: str, host: str, port: int, ready: Callable[[], None] | None = None) -> None:
    """Serve an RDB storage through Optuna's gRPC proxy until interrupted (blocks).

    The storage served is a SafeRDBStorage, so TAS attrs keep their first value (a plain
    Optuna proxy would overwrite them, and clients refuse it).
    """
    if is_journal(url) or url.startswith("grpc://"):
        raise GafiError(f"the gRPC proxy serves an RDB storage (sqlite:///..., postgresql+psycopg://...), not {redact(url)}")
    storage = open_storage(url)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:  # say "listening" only for an address that can be had
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise GafiError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if ready is not None:
        ready()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            # Each worker holds a request at a time, plus its heartbeat thread's.
            optuna.storages.run_grpc_proxy_server(storage, host=host, port=port, thread_pool=ThreadPoolExecutor(max_workers=64))
        except RuntimeError as exc:  # grpcio: the address cannot be bound
            raise GafiError(f"cannot listen on {host}:{port}: {exc}") from None


