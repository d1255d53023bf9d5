"""The `gafi-opt` command line: a thin layer over the library.

Every user error becomes one line on stderr and exit status 2; finished trials are in
the storage the moment they finish, so an error or Ctrl-C never loses them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import optuna

from gafi_opt.errors import GafiError

STORAGE_HELP = "Optuna storage URL: sqlite:///file.db, postgresql+psycopg://user@host/db, journal:///file.log or grpc://host:port."


class GafiGroup(click.Group):
    """Turns GafiError into a one-line message and exit status 2 for every command."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GafiError as exc:
            click.echo(f"gafi-opt: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("gafi-opt: interrupted; finished trials are kept in the storage", err=True)
            sys.exit(130)


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _spec(study_file: str, overrides: tuple[str, ...]):
    from gafi_opt.spec import load_spec

    return load_spec(study_file, list(overrides))


study_argument = click.argument("study_file", metavar="STUDY", type=click.Path(dir_okay=False))
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a study-file key, e.g. --set cas.epochs=5 (repeatable)."
)
device_option = click.option("--device", default=None, help="Training device: auto, cpu, cuda or cuda:N (default: the spec's).")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")


@click.group(cls=GafiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gafi-opt")
def main():
    """Tune how a conditional generator is used to make synthetic training data (GaFi).

    A pipeline trains a real-data (filter) classifier and a conditional generator, then
    runs the GaFi stages as Optuna studies in one storage: checkpoint, stddev
    (Expansion Trick), threshold (Dynamic Sample Filtering) and a final stage repeated
    over seeds, beside the synthetic and real baselines.

    Start with:  gafi-opt run studies/digits.toml
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)


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
    from gafi_opt.train.real import filter_path, train_real_classifier
    from gafi_opt.worker import resolve_device

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
    """Train the conditional generator of STUDY, saving the EMA weights every epoch.

    Checkpoints go to <run_dir>/generator/epoch_NNNN.pt; an interrupted run resumes
    from the last finished epoch.
    """
    from gafi_opt.checkpoints import generator_dir
    from gafi_opt.data import load_data
    from gafi_opt.train.gan import train_generator
    from gafi_opt.worker import resolve_device

    spec = _spec(study_file, overrides)
    epochs = train_generator(spec, load_data(spec.data), resolve_device(device or spec.device), seed=spec.seed if seed is None else seed, progress=_progress(quiet))
    click.echo(f"generator trained for {epochs} epochs; checkpoints in {generator_dir(spec)}")


@main.command("run")
@study_argument
@click.option("--storage", default=None, help=STORAGE_HELP + " Default: an SQLite file in the run directory.")
@set_option
@device_option
@quiet_option
def run_cmd(study_file, storage, overrides, device, quiet):
    """Run the whole pipeline of STUDY on this machine, skipping what is already done.

    Trains the filter classifier and the generator if needed, runs the checkpoint,
    stddev, threshold and final stages (and the synthetic baseline), then prints the
    best-hyperparameter table. Run it again after an interruption to resume.
    """
    from gafi_opt.report import format_rows, summary_row
    from gafi_opt.runner import run_pipeline
    from gafi_opt.worker import resolve_device

    spec = _spec(study_file, overrides)
    progress = not quiet
    pipeline = run_pipeline(spec, storage, resolve_device(device or spec.device), progress=_progress(quiet), reporter=_stage_line if progress else None)
    click.echo(format_rows([summary_row(pipeline)], "markdown"))


def _stage_line(pipeline, stage) -> None:
    from gafi_opt.report import stage_status

    row = next(r for r in stage_status(pipeline) if r["stage"] == stage)
    try:
        best = f", best val {pipeline.best_trial(stage).value:.4f}"
    except GafiError:
        best = ""
    click.echo(f"[{pipeline.name}] {stage}: {row['complete']} complete, {row['pruned']} pruned, {row['fail']} failed{best}", err=True)


@main.command("status")
@click.option("--storage", required=True, help=STORAGE_HELP)
@click.option("--pipeline", "names", multiple=True, help="Pipeline name (repeatable; default: all).")
def status_cmd(storage, names):
    """Show which stage each pipeline is in and its trials by state."""
    from gafi_opt.pipeline import Pipeline, pipeline_names
    from gafi_opt.report import stage_status
    from gafi_opt.storage import open_storage, redact

    names = names or pipeline_names(open_storage(storage))
    if not names:
        raise GafiError(f"no pipelines in {redact(storage)}")
    for name in names:
        pipeline = Pipeline.load(storage, name)
        current = pipeline.current_stage()
        click.echo(f"pipeline {name}: {'complete' if current is None else 'stage ' + current}")
        click.echo(f"  {'stage':<11}{'state':<9}{'complete':>9}{'pruned':>8}{'failed':>8}{'running':>9}{'waiting':>9}")
        for row in stage_status(pipeline):
            click.echo(
                f"  {row['stage']:<11}{row['state']:<9}{row['complete']:>9}{row['pruned']:>8}{row['fail']:>8}{row['running']:>9}{row['waiting']:>9}"
            )


@main.command("export")
@click.option("--storage", required=True, help=STORAGE_HELP)
@click.option("--pipeline", "names", multiple=True, help="Pipeline name (repeatable; default: all).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to this file instead of stdout.")
def export_cmd(storage, names, fmt, output):
    """Export the best-hyperparameter table: one row per pipeline, with both baselines."""
    from gafi_opt.pipeline import Pipeline, pipeline_names
    from gafi_opt.report import format_rows, summary_row
    from gafi_opt.storage import open_storage, redact

    names = names or pipeline_names(open_storage(storage))
    if not names:
        raise GafiError(f"no pipelines in {redact(storage)}")
    text = format_rows([summary_row(Pipeline.load(storage, name)) for name in names], fmt)
    if output:
        Path(output).write_text(text + "\n")
    else:
        click.echo(text)


if __name__ == "__main__":
    main()
