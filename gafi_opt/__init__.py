"""gafi-opt: the GaFi (Gap Filler) pipeline as a chain of Optuna studies.

The public names, importable from `gafi_opt` itself; each loads its module on first use, so that
`import gafi_opt` (and `gafi-opt --help`) stays fast until torch is needed.

    load_spec(path, overrides)        a study file as a validated Spec
    load_data(spec.data)              real train / val / test as uint8 tensors
    open_storage(url)                 an Optuna storage that many workers can share
    run_pipeline(spec, storage, ...)  prepare once, then run every stage (what `gafi-opt run` does)
    Pipeline.load(storage, name)      a pipeline's stages, choices and results
    TrialContext, TrialConfig,        one CAS trial in your own Optuna study
    train_cas
    SyntheticSource                   the filtered, recyclable, class-balanced synthetic set
    load_best(storage, name)          fresh synthetic images with a finished pipeline's chosen knobs
    summary_row, format_rows          the export's rows and formats
    GafiError                         bad input; its message names the problem
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("gafi-opt")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC = {
    "GafiError": "gafi_opt.errors",
    "load_spec": "gafi_opt.spec",
    "Spec": "gafi_opt.spec",
    "load_data": "gafi_opt.data",
    "RealData": "gafi_opt.data",
    "open_storage": "gafi_opt.storages",
    "TrialConfig": "gafi_opt.search",
    "SyntheticSource": "gafi_opt.synth",
    "TrialContext": "gafi_opt.cas",
    "CasResult": "gafi_opt.cas",
    "train_cas": "gafi_opt.cas",
    "Pipeline": "gafi_opt.pipeline",
    "summary_row": "gafi_opt.report",
    "format_rows": "gafi_opt.report",
    "run_pipeline": "gafi_opt.runner",
    "load_best": "gafi_opt.result",
    "Sampler": "gafi_opt.result",
}
__all__ = [
    "CasResult",
    "GafiError",
    "Pipeline",
    "RealData",
    "Sampler",
    "Spec",
    "SyntheticSource",
    "TrialConfig",
    "TrialContext",
    "__version__",
    "format_rows",
    "load_best",
    "load_data",
    "load_spec",
    "open_storage",
    "run_pipeline",
    "summary_row",
    "train_cas",
]

if TYPE_CHECKING:
    from gafi_opt.cas import CasResult, TrialContext, train_cas
    from gafi_opt.data import RealData, load_data
    from gafi_opt.errors import GafiError
    from gafi_opt.pipeline import Pipeline
    from gafi_opt.report import format_rows, summary_row
    from gafi_opt.result import Sampler, load_best
    from gafi_opt.runner import run_pipeline
    from gafi_opt.search import TrialConfig
    from gafi_opt.spec import Spec, load_spec
    from gafi_opt.storages import open_storage
    from gafi_opt.synth import SyntheticSource


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gafi_opt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
