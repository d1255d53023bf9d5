"""What optuna-dashboard shows of a pipeline, and the server that shows it.

`publish_trial` is the worker's call when a trial's training ends (before it is told, while
the trial can still take artifacts): a markdown note saying what the trial was and the PNG
grid of its synthetic samples as an artifact. `publish_stage`, called after the trial is
told, refreshes the stage study's key figure; when the stage is complete, the root study's
note gets the best-hyperparameter table.
`make_server` serves optuna-dashboard on a storage with the pipelines' artifact store wired in.
"""

from __future__ import annotations

import logging
import wsgiref.simple_server
from functools import lru_cache
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import optuna
import optuna_dashboard

from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline, TrialHooks, pipeline_names
from gafi_opt.report.artifacts import artifact_dir, copy_sample_grid, register_artifact_dir, store_for_dirs, upload_sample_grid
from gafi_opt.report.figures import stage_figure
from gafi_opt.report.formats import markdown_table, quality_cell
from gafi_opt.report.health import stage_warnings
from gafi_opt.report.rows import summary_row
from gafi_opt.search.stages import TrialConfig
from gafi_opt.storages import open_storage

log = logging.getLogger(__name__)
STAGE_FIGURE_ID = "stage-key-figure"  # one graph per stage study, overwritten as trials finish


def trial_note(trial_number: int, config: TrialConfig, result=None, pruned: bool = False) -> str:
    """The trial's markdown note: its data recipe, then what it scored."""
    threshold = "off (no filter)" if config.threshold is None else f"{config.threshold:g} (argmax must match, p > threshold)"
    recycle = "never (one fixed set)" if not config.recycle_every else f"every {config.recycle_every} classifier epoch(s)"
    lines = [
        f"### {config.stage} stage, trial {trial_number}",
        "",
        "| | |",
        "|---|---|",
        f"| stage | {config.stage} |",
        f"| checkpoint | {config.checkpoint} |",
    ]
    if config.sampler is not None:  # a diffusion generator's sampling knobs
        lines += [f"| sampler | {config.sampler} |", f"| guidance | {config.guidance:g} |", f"| sampling steps | {config.steps} |"]
    lines += [
        f"| stddev | {config.stddev:g} |",
        f"| threshold | {threshold} |",
        f"| recycle period | {recycle} |",
        f"| seed | {config.seed} |",
    ]
    if result is not None:
        lines.append("")
        outcome = f"pruned after {result.epochs} epoch(s) at val {result.val_acc:.4f}" if pruned else f"val CAS {result.val_acc:.4f}, test {result.test_acc:.4f}"
        lines.append(
            f"**{outcome}**; acceptance rate {result.acceptance_rate:.3f}, {result.fallback} unfiltered fallback sample(s), {result.seconds:.1f} s."
        )
        lines.append("")
        lines.append("The artifact `samples.png` shows the synthetic images it trained on: one row per class, after filtering.")
    return "\n".join(lines)


@lru_cache(maxsize=8)
def _store(directory: str):
    return store_for_dirs([Path(directory)])


def publish_trial(pipeline, study: optuna.Study, trial: optuna.Trial, config: TrialConfig, result=None, pruned: bool = False) -> None:
    """Note, sample grid and stage figure for a finished (not yet told) trial. Never fails the trial."""
    try:
        optuna_dashboard.save_note(trial, trial_note(trial.number, config, result, pruned))
        if result is not None and result.samples is not None:
            upload_sample_grid(trial, result.samples, _store(str(register_artifact_dir(pipeline))))
    except (OSError, GafiError, optuna.exceptions.OptunaError) as exc:
        # The trial's score matters more than its pictures: keep going, but say so.
        log.warning("could not publish trial %d of %s to the dashboard: %s", trial.number, study.study_name, exc)


def publish_reused_trial(pipeline, study: optuna.Study, trial: optuna.Trial, config: TrialConfig, source, source_name: str) -> None:
    """Note and sample grid of a trial that took `source`'s result (gafi_opt.reuse). Never fails the trial."""
    try:
        attrs = source.user_attrs
        reused = (
            f"**Not trained again**: the same data and seed as the {source_name}, so its result: "
            f"val CAS {attrs['val_acc']:.4f}, test {attrs.get('test_acc', float('nan')):.4f}, 0 classifier-epochs."
        )
        optuna_dashboard.save_note(trial, trial_note(trial.number, config) + "\n\n" + reused)
        copy_sample_grid(source, trial, _store(str(register_artifact_dir(pipeline))), pipeline.storage)
    except (OSError, GafiError, optuna.exceptions.OptunaError) as exc:
        log.warning("could not publish trial %d of %s to the dashboard: %s", trial.number, study.study_name, exc)


def publish_stage(pipeline, stage: str) -> None:
    """Refresh the stage study's key figure; once the stage is complete, the root's result table too."""
    try:
        study = pipeline.stage_study(stage)
        figure = stage_figure(pipeline, stage)
        if study is not None and figure is not None:
            optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=STAGE_FIGURE_ID)
        if pipeline.stage_complete(stage):
            publish_root_note(pipeline)
    except (OSError, GafiError, optuna.exceptions.OptunaError) as exc:
        log.warning("could not publish stage %s of %s to the dashboard: %s", stage, pipeline.name, exc)


def root_note(pipeline) -> str:
    """The root study's note: the result table, and what the distribution metrics say once they are measured."""
    row = summary_row(pipeline)
    note = f"## {pipeline.name}\n\nBest hyperparameters so far (accuracies on real test data):\n\n{markdown_table([row])}\n"
    note += "".join(f"\n> **{line}**\n" for line in stage_warnings(pipeline))
    if row.get("fd") is not None:
        note += (
            "\nSynthetic against real val images in the filter classifier's feature space (Fréchet distance: lower is closer; "
            "k-NN precision: share of synthetic images that look real; recall: share of real images the synthetic set covers), "
            "synthetic baseline → GaFi's choice, with a real train subset of the same shape for reference: "
            f"FD {quality_cell(row, 'fd')}, precision {quality_cell(row, 'precision')}, recall {quality_cell(row, 'recall')}.\n"
        )
    return note


def publish_root_note(pipeline) -> None:
    """Write the root study's note (never fails the run)."""
    try:
        optuna_dashboard.save_note(pipeline.root, root_note(pipeline))
    except (OSError, GafiError, optuna.exceptions.OptunaError) as exc:
        log.warning("could not publish the result table of %s to the dashboard: %s", pipeline.name, exc)


class DashboardHooks(TrialHooks):
    """The loop's hooks for optuna-dashboard: each trial's note and sample grid, each stage's key figure;
    then `reporter(plan, stage)` (the CLI's progress line), if any."""

    def __init__(self, reporter=None):
        self.reporter = reporter

    def trial_trained(self, plan, study, trial, config, result, pruned):
        if (pipeline := _pipeline_of(plan)) is not None:
            publish_trial(pipeline, study, trial, config, result, pruned)

    def trial_reused(self, plan, study, trial, config, source, source_name):
        if (pipeline := _pipeline_of(plan)) is not None:
            publish_reused_trial(pipeline, study, trial, config, source, source_name)

    def trial_finished(self, plan, stage):
        if isinstance(plan, Pipeline):
            publish_stage(plan, stage)
        if self.reporter is not None:
            self.reporter(plan, stage)


def _pipeline_of(plan) -> Pipeline | None:
    """The pipeline whose artifact store a plan's trials use: the plan itself, or the one it ablates (multigen: none)."""
    return plan if isinstance(plan, Pipeline) else getattr(plan, "pipeline", None)


def dashboard_artifact_store(storage, explicit: str | None):
    """The store to serve: `--artifacts DIR`, else the folders the storage's pipelines recorded."""
    if explicit:
        return store_for_dirs([Path(explicit).expanduser().resolve()])
    directories = [artifact_dir(Pipeline.load(storage, name)) for name in pipeline_names(storage)]
    existing = [d for d in directories if d.is_dir()]
    if not existing:
        return None
    return store_for_dirs(existing)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the dashboard's page fetches many API routes at once


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)


def make_server(storage, artifacts: str | None, host: str, port: int):
    """A WSGI server for optuna-dashboard on a storage (opened, or the URL of one), with the artifact store wired in."""
    storage = open_storage(storage, must_exist=True)
    store = dashboard_artifact_store(storage, artifacts)
    if store is None:
        log.warning("no artifact folder found: sample grids will not be shown (pass --artifacts DIR)")
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    try:
        return wsgiref.simple_server.make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise GafiError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}") from None


def dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/"

