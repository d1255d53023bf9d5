"""The `gafi-opt` command line: a thin layer over the library.

Every user error becomes one line on stderr and exit status 2; finished trials are in
the storage the moment they finish, so an error or Ctrl-C never loses them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import optuna

from gafi_opt.errors import GafiError

STORAGE_ENV = "GAFI_STORAGE"  # also how gafi_opt.runner hands local workers the URL
# What Ctrl-C leaves behind, for the commands that keep nothing in a storage.
INTERRUPTED_NOTES = {
    "train-generator": "the generator's last finished epoch is kept; run it again to resume from there",
    "train-classifier": "the filter classifier is saved only once trained; run it again to train it",
}
STORAGE_HELP = "Optuna storage URL: sqlite:///file.db, postgresql+psycopg://user@host/db, journal:///file.log or grpc://host:port."


def storage_option(what: str = STORAGE_HELP, default: str | None = None):
    """--storage, read from $GAFI_STORAGE when not given (every command that takes a storage).

    `default`: what a missing value means; without it the option is required.
    """
    text = f"{what} Also read from ${STORAGE_ENV}" + (f"; without either, {default}." if default else ".")
    return click.option("--storage", required=default is None, envvar=STORAGE_ENV, help=text)


class GafiGroup(click.Group):
    """Turns GafiError and click's usage errors into one line and exit status 2 for every command."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # the help text: `gafi-opt` alone asks for it
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            # click's own form is three lines (usage, hint, error); ours names the problem and where help is.
            message = exc.format_message()
            envvar = getattr(getattr(exc, "param", None), "envvar", None)
            if isinstance(exc, click.MissingParameter) and isinstance(envvar, str):
                message = f"{message.rstrip('.')} (or set ${envvar})"
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"gafi-opt: error: {message}{where}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GafiError as exc:
            click.echo(f"gafi-opt: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            # gafi_opt.distributed.Interrupted (SIGTERM or Ctrl-C in a worker) says what became of its trial.
            note = getattr(exc, "trial_note", "") or INTERRUPTED_NOTES.get(ctx.invoked_subcommand, "finished trials are kept in the storage")
            click.echo(f"gafi-opt: interrupted{' by ' + exc.signal_name if hasattr(exc, 'signal_name') else ''}; {note}", err=True)
            sys.exit(getattr(exc, "exit_status", 130))
        except BrokenPipeError:
            # The reader went away (`gafi-opt status | head`): nothing is wrong, stop writing quietly.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (optuna.exceptions.StorageInternalError, ConnectionError) as exc:
            from gafi_opt.storages import redact_text

            cause = exc.__cause__ or exc
            click.echo(f"gafi-opt: error: the storage failed: {redact_text(' '.join(str(cause).split()))[:400]}", err=True)
            sys.exit(2)


class _StderrLines(logging.Handler):
    """The library's warnings (a lost worker found, a storage outage waited out) as `gafi-opt: ...` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"gafi-opt: {record.getMessage()}", err=True)


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _spec(study_file: str, overrides: tuple[str, ...]):
    from gafi_opt.spec import load_spec

    return load_spec(study_file, list(overrides))


study_argument = click.argument("study_file", metavar="STUDY", type=click.Path(dir_okay=False))
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a study-file key, e.g. --set cas.epochs=5 (repeatable)."
)
device_option = click.option("--device", default=None, help="Training device: auto, cpu, cuda or cuda:N (default: the spec's).")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for torch per process (default: torch's choice; with run --workers N, the cores / N). "
    "One thread is often fastest on a busy machine.",
)
artifacts_option = click.option(
    "--artifacts",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder of the artifact store for the trials' sample grids (default: <run_dir>/artifacts; recorded in the storage).",
)


@click.group(cls=GafiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gafi-opt")
def main():
    """Tune how a conditional generator is used to make synthetic training data (GaFi).

    A pipeline trains a real-data (filter) classifier and a conditional generator, then
    runs the GaFi stages as Optuna studies in one storage: checkpoint, stddev
    (Expansion Trick), threshold (Dynamic Sample Filtering) and a final stage repeated
    over seeds, beside the synthetic and real baselines. A diffusion generator adds
    stages for its sampler, guidance scale and sampling steps.

    Start with:  gafi-opt run studies/digits.toml
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    library_log = logging.getLogger("gafi_opt")
    if not any(isinstance(handler, _StderrLines) for handler in library_log.handlers):
        library_log.addHandler(_StderrLines(logging.WARNING))


@main.command("train-classifier")
@study_argument
@set_option
@device_option
@quiet_option
def train_classifier_cmd(study_file, overrides, device, quiet):
    """Train the real-data classifier (the filter, and the real baseline) of STUDY.

    Kept in <run_dir>/filter.pt; the epoch with the best real-val accuracy is saved.
    """
    from gafi_opt.data import load_data
    from gafi_opt.models.device import resolve_device
    from gafi_opt.train.real import filter_path, train_real_classifier

    spec = _spec(study_file, overrides)
    result = train_real_classifier(spec, load_data(spec.data), resolve_device(device or spec.device), _progress(quiet))
    click.echo(f"filter classifier {filter_path(spec)}: val {result.val_acc:.4f}, test {result.test_acc:.4f} (epoch {result.epoch})")


@main.command("train-generator")
@study_argument
@click.option("--seed", type=int, default=None, help="Training seed (default: the spec's seed).")
@set_option
@device_option
@quiet_option
def train_generator_cmd(study_file, seed, overrides, device, quiet):
    """Train the conditional generator of STUDY (a GAN or a diffusion model), saving the EMA weights every epoch.

    Checkpoints go to <run_dir>/generator/epoch_NNNN.pt; an interrupted run resumes
    from the last finished epoch.
    """
    from gafi_opt.data import load_data
    from gafi_opt.models.checkpoints import generator_dir
    from gafi_opt.models.device import resolve_device
    from gafi_opt.train.generator import train_generator

    spec = _spec(study_file, overrides)
    epochs = train_generator(spec, load_data(spec.data), resolve_device(device or spec.device), seed=spec.seed if seed is None else seed, progress=_progress(quiet))
    click.echo(f"generator trained for {epochs} epochs; checkpoints in {generator_dir(spec)}")


heartbeat_option = click.option(
    "--heartbeat-interval", type=click.IntRange(min=1), default=10, show_default=True, help="Seconds between heartbeats of a running trial."
)
grace_option = click.option(
    "--grace-period",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Seconds without a heartbeat after which a worker's trial is failed and re-queued by another.",
)


outage_option = click.option(
    "--storage-outage",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a database that stops answering (a restart, a network blip) before giving up with "
    "exit status 2; a trained trial's result is kept until the database takes it.",
)


def _worker_options(heartbeat_interval: int, grace_period: int, storage_outage: int):
    from gafi_opt.pipeline import WorkerOptions

    if grace_period < 2 * heartbeat_interval:
        raise GafiError(f"--grace-period ({grace_period}) must be at least twice --heartbeat-interval ({heartbeat_interval})")
    return WorkerOptions(heartbeat_interval=heartbeat_interval, grace_period=grace_period, storage_outage=storage_outage)


def _open_for_work(url: str, options, must_exist: bool = False):
    """The storage, opened once, waiting out database outages as long as the worker options say."""
    from gafi_opt.storages import open_storage
    from gafi_opt.storages.outage import set_outage_limit

    storage = open_storage(url, must_exist=must_exist)
    set_outage_limit(storage, options.storage_outage)
    return storage


@main.command("run")
@study_argument
@storage_option(default="the spec's storage (default: an SQLite file in the run directory)")
@artifacts_option
@set_option
@click.option(
    "--paper-selection",
    is_flag=True,
    help="The paper's protocol: checkpoint, stddev and threshold chosen by argmax on the TEST split, one seed per point "
    "(same as --set selection=test --set checkpoint.rule=argmax ... for each search stage); exports mark such rows test-selected.",
)
@device_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Local worker processes (after preparing once): one per GPU when there are several, else the CPU cores split between them.",
)
@threads_option
@heartbeat_option
@grace_option
@outage_option
@quiet_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "csv", "latex", "json"]),
    default="markdown",
    show_default=True,
    help="How to print the final table (as `gafi-opt export --format`; json: a list holding the export's row).",
)
def run_cmd(study_file, storage, artifacts, overrides, paper_selection, device, workers, threads, heartbeat_interval, grace_period, storage_outage, quiet, fmt):
    """Run the whole pipeline of STUDY on this machine, skipping what is already done.

    Trains the filter classifier and the generator if needed, runs the checkpoint,
    stddev, threshold and final stages (and the synthetic baseline; a diffusion generator's
    sampler, guidance and steps stages after checkpoint), then prints the
    best-hyperparameter table. Run it again after an interruption to resume.
    With --workers N, N local worker processes share the trials (see `gafi-opt worker`).
    """
    from gafi_opt.pipeline import Pipeline
    from gafi_opt.report import format_rows, summary_row
    from gafi_opt.report.artifacts import register_artifact_dir
    from gafi_opt.report.health import stage_warnings
    from gafi_opt.report.progress import StageProgress
    from gafi_opt.runner import run_pipeline

    from gafi_opt.spec import PAPER_SELECTION

    options = _worker_options(heartbeat_interval, grace_period, storage_outage)
    spec = _spec(study_file, overrides + (tuple(PAPER_SELECTION) if paper_selection else ()))
    _set_threads(threads)
    opened = _open_for_work(storage or spec.storage_url, options)
    register_artifact_dir(Pipeline.create_or_load(spec, opened), artifacts)
    stage_line = StageProgress(_progress(quiet))
    pipeline = run_pipeline(
        spec, opened, device or spec.device, workers, _progress(quiet), stage_line, options, log=None if quiet else _note, threads=threads
    )
    stage_line.close()
    click.echo(format_rows([summary_row(pipeline)], fmt))
    for line in stage_warnings(pipeline):
        _note(line)


def _note(line: str) -> None:
    click.echo(f"gafi-opt: {line}", err=True)


@main.command("worker")
@storage_option()
@click.option("--pipeline", "name", required=True, help="Name of the pipeline to join (see `gafi-opt status`).")
@device_option
@threads_option
@heartbeat_option
@grace_option
@outage_option
@click.option(
    "--wait-prepared",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to wait for `gafi-opt run` to prepare the pipeline (train its models). Default: as long as it takes; 0: fail at once.",
)
@quiet_option
def worker_cmd(storage, name, device, threads, heartbeat_interval, grace_period, storage_outage, wait_prepared, quiet):
    """Join pipeline NAME in STORAGE and run its trials until it is complete (exit 0).

    Any number of workers, on any number of machines, may join one pipeline: each grid
    point (or budgeted trial) is finished by exactly one trial. A worker that dies is
    detected by its missing heartbeat and its trial re-run by another; SIGTERM or Ctrl-C
    marks the running trial failed and re-queues it (exit status 143 or 130). Starting a
    worker on a finished pipeline does nothing. A worker never trains the filter classifier
    or the generator: it waits until `gafi-opt run` has prepared the pipeline, and the
    run directory must be visible at the same path on every machine.
    """
    import socket

    from gafi_opt.models.device import resolve_device
    from gafi_opt.pipeline import Pipeline
    from gafi_opt.report.progress import StageProgress
    from gafi_opt.runner import wait_until_prepared, work
    from gafi_opt.storages import redact

    options = _worker_options(heartbeat_interval, grace_period, storage_outage)
    pipeline = Pipeline.load(_open_for_work(storage, options, must_exist=True), name)
    resolved = resolve_device(device or pipeline.spec.device)
    _set_threads(threads)
    wait_until_prepared(pipeline, wait_prepared, None if quiet else _note)
    who = f"{socket.gethostname()}:{os.getpid()}"
    if not quiet:
        _note(f"worker {who} joined pipeline {name!r} in {redact(storage)} on {resolved}")
    stage_line = StageProgress(_progress(quiet))
    stats = work(pipeline, resolved, progress=_progress(quiet), reporter=stage_line, options=options)
    stage_line.close()
    if not quiet:
        _note(
            f"pipeline {name!r} complete; worker {who} finished {stats.complete} trials, pruned {stats.pruned}, "
            f"recovered {stats.stale_failed} from lost workers"
        )


@main.command("storage-proxy")
@storage_option("The RDB storage to serve: sqlite:///file.db or postgresql+psycopg://...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface; the proxy has no authentication).")
@click.option("--port", default=13000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
def storage_proxy_cmd(storage, host, port):
    """Serve an RDB storage to workers through Optuna's gRPC storage proxy.

    Workers then use --storage grpc://HOST:PORT and need no database driver or credentials.
    Claims stay atomic (the proxy keeps gafi-opt's test-and-set attributes); Optuna's own
    heartbeat table is not reachable through the proxy, so workers detect lost trials by
    their heartbeat attribute alone. Stop with Ctrl-C or SIGTERM.
    """
    import signal

    from gafi_opt.storages import redact, serve_proxy

    def stop(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        serve_proxy(storage, host, port, ready=lambda: _note(f"gRPC storage proxy for {redact(storage)} listening on {host}:{port} (Ctrl-C to stop)"))
    except KeyboardInterrupt:
        _note("gRPC storage proxy stopped")


@main.command("status")
@storage_option()
@click.option("--pipeline", "names", multiple=True, help="Pipeline name (repeatable; default: all).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: a list with one object per pipeline (pipeline, current_stage, complete, classifier_epochs, stages: per "
    "stage its state, trials by Optuna state (complete, pruned, fail, running, waiting), reused and epochs).",
)
def status_cmd(storage, names, fmt):
    """Show which stage each pipeline is in, its trials by state, the trials that reused an
    earlier trial's result, and the classifier-epochs each stage spent."""
    import json

    from gafi_opt.pipeline import Pipeline, pipeline_names
    from gafi_opt.report import stage_status
    from gafi_opt.report.health import stage_warnings
    from gafi_opt.storages import open_storage, redact

    opened = open_storage(storage, must_exist=True)
    names = names or pipeline_names(opened)
    if not names:
        raise GafiError(f"no pipelines in {redact(storage)}")
    statuses = []
    for name in names:
        pipeline = Pipeline.load(opened, name)
        current = pipeline.current_stage()
        rows = stage_status(pipeline)
        statuses.append(
            {
                "pipeline": name,
                "current_stage": current,
                "complete": current is None,
                "classifier_epochs": sum(r["epochs"] for r in rows),
                "stages": rows,
                "warnings": stage_warnings(pipeline),
            }
        )
    if fmt == "json":
        click.echo(json.dumps(statuses, indent=2))
        return
    for status in statuses:
        current = status["current_stage"]
        click.echo(f"pipeline {status['pipeline']}: {'complete' if current is None else 'stage ' + current}")
        click.echo(f"  {'stage':<11}{'state':<9}{'complete':>9}{'pruned':>8}{'failed':>8}{'running':>9}{'waiting':>9}{'reused':>8}{'epochs':>8}")
        for row in status["stages"]:
            click.echo(
                f"  {row['stage']:<11}{row['state']:<9}{row['complete']:>9}{row['pruned']:>8}{row['fail']:>8}{row['running']:>9}"
                f"{row['waiting']:>9}{row['reused']:>8}{row['epochs']:>8}"
            )
        click.echo(f"  classifier-epochs spent by finished trials: {status['classifier_epochs']} (reused trials cost none)")
        for line in status["warnings"]:
            click.echo(f"  {line}")


@main.command("export")
@storage_option()
@click.option("--pipeline", "names", multiple=True, help="Pipeline name (repeatable; default: all).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "latex", "json"]), default="markdown", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to this file instead of stdout.")
@click.option("--ablation", is_flag=True, help="The ablation table (`gafi-opt ablate`) of the pipelines instead.")
def export_cmd(storage, names, fmt, output, ablation):
    """Export the best-hyperparameter table: one row per pipeline, with both baselines and the
    distribution metrics of its synthetic sets, then one per multi-generator study (`gafi-opt
    multigen`) of those pipelines, by K. With --ablation: each pipeline's ablation table.

    markdown and latex show accuracies in percent (latex: a booktabs tabular, needs
    \\usepackage{booktabs}); csv and json keep them as fractions at full precision.
    """
    from gafi_opt.pipeline import Pipeline, pipeline_names
    from gafi_opt.report import format_rows, multigen_rows, summary_row
    from gafi_opt.report.health import stage_warnings
    from gafi_opt.storages import open_storage, redact

    opened = open_storage(storage, must_exist=True)
    names = names or pipeline_names(opened)
    if not names:
        raise GafiError(f"no pipelines in {redact(storage)}")
    pipelines = [Pipeline.load(opened, name) for name in names]
    for pipeline in pipelines:
        for line in stage_warnings(pipeline):
            _note(line)  # stderr: the table on stdout stays clean for scripts
    if ablation:
        text = _ablation_table(opened, names, fmt)
    else:
        rows = [summary_row(pipeline) for pipeline in pipelines] + multigen_rows(opened, list(names))
        text = format_rows(rows, fmt)
    if output:
        _write(output, text)
    else:
        click.echo(text)


def _ablation_table(opened, names, fmt: str) -> str:
    from gafi_opt.pipeline import Pipeline
    from gafi_opt.report.ablation import ablation_rows, format_ablation
    from gafi_opt.storages import storage_name

    rows = [row for name in names for row in ablation_rows(Pipeline.load(opened, name))]
    if not rows:
        raise GafiError(f"no ablation of {', '.join(names)} in {storage_name(opened)}: run `gafi-opt ablate` first")
    return format_ablation(rows, fmt)


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text + "\n")
    except OSError as exc:
        raise GafiError(f"cannot write {path}: {exc.strerror}") from None


@main.command("plot")
@storage_option()
@click.option("--pipeline", "name", required=True, help="Pipeline name.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the HTML files.")
@click.option(
    "--plotlyjs",
    type=click.Choice(["embed", "directory"]),
    default="embed",
    show_default=True,
    help="embed: every file stands alone (about 4.8 MB each); directory: one shared plotly.min.js beside them.",
)
def plot_cmd(storage, name, out_dir, plotlyjs):
    """Write a pipeline's figures as standalone HTML (plotly).

    Per stage: CAS against the searched value with the best marked (<stage>-cas),
    per-epoch val accuracy of the best trials (<stage>-curves) and Optuna's
    optimisation history (<stage>-history); per-seed curves of the baseline and final stages.
    """
    from gafi_opt.pipeline import Pipeline
    from gafi_opt.report.figures import pipeline_figures, write_html
    from gafi_opt.storages import open_storage

    figures = pipeline_figures(Pipeline.load(open_storage(storage, must_exist=True), name))
    if not figures:
        raise GafiError(f"pipeline {name!r} has no finished trials to plot yet")
    for path in write_html(figures, out_dir, plotlyjs):
        click.echo(str(path))


@main.command("dashboard")
@storage_option()
@click.option(
    "--artifacts",
    default=None,
    type=click.Path(file_okay=False),
    help="Artifact folder (default: the folders the storage's pipelines recorded).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
def dashboard_cmd(storage, artifacts, host, port):
    """Serve optuna-dashboard on a pipeline storage, with the sample grids.

    Each trial shows a note saying what it was and, as an artifact, the grid of
    synthetic samples it trained on; each stage study shows its key figure. Stop with Ctrl-C.
    """
    from gafi_opt.report.dashboard import dashboard_url, make_server
    from gafi_opt.storages import open_storage

    server = make_server(open_storage(storage, must_exist=True), artifacts, host, port)
    click.echo(f"optuna-dashboard on {dashboard_url(host, server.server_port)} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command("scarce")
@study_argument
@click.option("--fractions", default="0.1,1.0", show_default=True, help="Real fractions of the train split to compare, comma-separated, each in (0, 1].")
@click.option("--seeds", default=3, show_default=True, type=int, help="Seeds of the final stage and of the real-only baseline.")
@click.option(
    "--budget",
    type=click.Choice(["steps", "epochs"]),
    default="steps",
    show_default=True,
    help="steps: multiply every training length in epochs by 1/fraction (same images seen at every fraction); epochs: keep the study's epochs.",
)
@storage_option(default="<run_dir>-scarce/gafi.db")
@set_option
@device_option
@quiet_option
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write the table to this file.")
def scarce_cmd(study_file, fractions, seeds, budget, storage, overrides, device, quiet, fmt, output):
    """Real-only vs real + synthetic (augment) vs synthetic-only, per real fraction.

    For each fraction, runs (or resumes) two pipelines of STUDY on that stratified,
    seeded share of the real train split: objective synthetic-only and augment. The
    filter classifier and the generator train on the same subset; the real-only
    baseline trains the CAS recipe on it alone. Prints test accuracy, mean ± spread
    over the seeds. --set overrides apply first; --budget steps then scales their epochs.

    \b
    Example: gafi-opt scarce studies/digits.toml --fractions 0.1,1.0 --seeds 3
    """
    import json

    from gafi_opt.experiments.scarce import parse_fractions, run_scarce, scarce_table
    from gafi_opt.models.device import resolve_device
    from gafi_opt.report.progress import StageProgress

    parsed = parse_fractions(fractions)
    if seeds < 1:
        raise GafiError(f"--seeds must be >= 1, got {seeds}")
    spec = _spec(study_file, overrides)
    rows = run_scarce(
        spec,
        parsed,
        seeds,
        budget=budget,
        storage=storage,
        device=resolve_device(device or spec.device),
        progress=_progress(quiet),
        reporter_factory=lambda: StageProgress(_progress(quiet)),
        log=None if quiet else (lambda line: click.echo(line, err=True)),
    )
    text = json.dumps(rows, indent=2) if fmt == "json" else scarce_table(rows)
    if output:
        Path(output).write_text(text + "\n")
    click.echo(text)


@main.command("multigen")
@storage_option()
@click.option("--pipelines", "pipelines", required=True, metavar="A,B,...", help="Finished pipelines whose generators to combine (comma-separated).")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Classifiers to train, one per seed (default: the first pipeline's final.seeds).")
@device_option
@threads_option
@heartbeat_option
@grace_option
@outage_option
@quiet_option
def multigen_cmd(storage, pipelines, seeds, device, threads, heartbeat_interval, grace_period, storage_outage, quiet):
    """Train the final classifier on a set drawn from several finished pipelines' generators.

    Each generator is used at its own best checkpoint, stddev and threshold (with its own
    filter) and gives an equal share of every class; the set is renewed every epoch. The
    run is the Optuna study multigen/<A+B+...> in the same storage, one trial per seed, run
    by the same worker loop as the stages: run it again to resume (a seed whose process died
    is re-run once its heartbeat is older than --grace-period) or to add seeds; several
    multigen processes may share the seeds. `gafi-opt export` adds a row for it (the paper
    shows K = 1, 2, 4, 6).
    """
    from gafi_opt.experiments.multigen import run_multigen
    from gafi_opt.models.device import resolve_device
    from gafi_opt.report import format_rows, multigen_rows
    from gafi_opt.report.dashboard import DashboardHooks

    options = _worker_options(heartbeat_interval, grace_period, storage_outage)
    _set_threads(threads)
    opened = _open_for_work(storage, options, must_exist=True)
    names = [name.strip() for name in pipelines.split(",") if name.strip()]
    plan, _ = run_multigen(
        opened, names, seeds, resolve_device(device) if device else None, progress=_progress(quiet), options=options, hooks=DashboardHooks()
    )
    rows = [row for row in multigen_rows(opened, names) if row["pipeline"] == plan.name]
    click.echo(format_rows(rows, "markdown"))


@main.command("sample")
@storage_option()
@click.option("--pipeline", "name", required=True, help="A finished pipeline, or a multigen study (multigen/A+B).")
@click.option("-o", "--output", required=True, type=click.Path(), help="The .npz file or the image folder to write.")
@click.option("--per-class", type=click.IntRange(min=1), default=None, help="Images per class (default: the pipeline's synthetic set size).")
@click.option("--format", "fmt", type=click.Choice(["npz", "folder"]), default="npz", show_default=True, help="npz: MedMNIST-style archive; folder: OUT/<class>/<n>.png.")
@click.option("--stage", default=None, help="Take trial --trial of this stage's recipe instead of the final choice.")
@click.option("--trial", "trial", type=click.IntRange(min=0), default=None, help="Trial number in --stage (see the dashboard or the export).")
@click.option("--seed", type=int, default=None, help="Sampling seed (default: the trial's seed, else the pipeline's).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (a folder only if gafi-opt wrote it).")
@device_option
@threads_option
@quiet_option
def sample_cmd(storage, name, output, per_class, fmt, stage, trial, seed, force, device, threads, quiet):
    """Write the synthetic set a pipeline's choices make: its best checkpoint, stddev and threshold,
    filtered by its own filter classifier, an equal number of images of every class.

    \b
    npz:    train_images uint8 (N, H, W) or (N, H, W, C), train_labels (N, 1), sidecar OUT.json
    folder: OUT/<class>/<n>.png (torchvision ImageFolder reads it), sidecar OUT/sample.json
    The sidecar names the pipeline, the knobs, the acceptance rate, the fallback count, the
    seed and the gafi-opt version. A trial's recipe at its own seed draws the set it first trained on.
    """
    from gafi_opt.result import check_output, open_sampler, resolve, write_sample

    out = check_output(output, fmt, force)  # before anything is loaded or drawn
    _set_threads(threads)
    recipe = resolve(_open(storage), name, stage, trial)
    sampler = open_sampler(recipe, device or recipe.pipelines[0].spec.device, seed)
    sidecar = write_sample(sampler, out, fmt, per_class or sampler.per_class, progress=_progress(quiet))
    click.echo(
        f"wrote {sidecar['images']} images ({sidecar['per_class']} per class) of {recipe.describe()} to {out}; "
        f"acceptance rate {sidecar['acceptance_rate']:.3f}, {sidecar['fallback_samples']} fallback sample(s)"
    )


def _open(storage):
    from gafi_opt.storages import open_storage

    return open_storage(storage, must_exist=True)


@main.command("ablate")
@storage_option()
@click.option("--pipeline", "name", required=True, help="A finished pipeline.")
@device_option
@threads_option
@heartbeat_option
@grace_option
@outage_option
@quiet_option
def ablate_cmd(storage, name, device, threads, heartbeat_interval, grace_period, storage_outage, quiet):
    """Train what each GaFi technique adds to the final choice: the choice with filtering,
    expansion (stddev) and recycling each left out, then each alone, then none, over the final
    stage's seeds; print the table beside the full GaFi row.

    The run is the Optuna study <pipeline>/ablation, one slot per (variant, seed), run by the
    same worker loop as the stages: run it again to resume (a second run trains nothing), or
    start several to share it. A variant whose recipe repeats a finished trial takes its result.
    `gafi-opt export --ablation` writes the table in every format.
    """
    from gafi_opt.experiments.ablation import run_ablation
    from gafi_opt.models.device import resolve_device
    from gafi_opt.report.ablation import ablation_rows, format_ablation
    from gafi_opt.report.dashboard import DashboardHooks

    options = _worker_options(heartbeat_interval, grace_period, storage_outage)
    _set_threads(threads)
    plan, _ = run_ablation(
        _open_for_work(storage, options, must_exist=True), name, resolve_device(device) if device else None, progress=_progress(quiet), options=options, hooks=DashboardHooks()
    )
    click.echo(format_ablation(ablation_rows(plan.pipeline), "markdown"))


if __name__ == "__main__":
    main()
