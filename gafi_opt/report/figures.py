"""Plotly figures of a pipeline: what each stage found, how its best trials learned, how the search went.

- `stage_figure`: the stage's key figure. For the searched stages, what the selection rule saw:
  each trial's score against the searched value (checkpoint, stddev, threshold, or a diffusion generator's sampler, guidance or steps), the robust rule's smoothed
  estimate with its band, pruned trials at their last reported epoch, test accuracy beside it
  (never used to choose, except in paper mode) and the chosen point starred; for the baseline and final stages,
  the per-epoch val curves of every seed.
- `val_curves_figure`: per-epoch val accuracy (the `val_history` user attr) of the best trials.
- `history_figure`: Optuna's optimisation history of the stage study.

The same figures go to the dashboard (saved on the stage studies) and to HTML (`gafi-opt plot`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from gafi_opt.errors import GafiError
from gafi_opt.search.selection import LATE_RULES
from gafi_opt.search.stages import SEARCHED

SEED_STAGES = ("baseline", "final")
AXIS_TITLES = {
    "checkpoint": "generator checkpoint (epoch)", "stddev": "latent stddev σ", "threshold": "filter threshold",
    "sampler": "diffusion sampler", "guidance": "classifier-free guidance scale w", "steps": "sampling steps",
}  # fmt: skip
BEST_CURVES = 5


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _trial_val(trial: optuna.trial.FrozenTrial) -> float | None:
    """Val CAS of a finished trial: its value, or the last epoch reported before it was pruned."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    if trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None


def _shown(value) -> str:
    """A searched value as figures label it (a sampler's name as it is, numbers in short form)."""
    return value if isinstance(value, str) else f"{value:g}"


def _choice(pipeline, stage: str):
    try:
        return pipeline.choice(stage)
    except GafiError:
        return None


def stage_figure(pipeline, stage: str) -> go.Figure | None:
    """The stage's key figure, or None while it has no finished trial."""
    trials = pipeline.finished_trials(stage)
    if not trials:
        return None
    if stage in SEED_STAGES:
        return _seed_curves(pipeline, stage, trials)
    return _cas_against_param(pipeline, stage, trials)


def _cas_against_param(pipeline, stage: str, trials) -> go.Figure:
    """What the stage's rule saw: the raw scores, its estimate (robust: the smoothed mean ± sd), the choice."""
    param = SEARCHED[stage]
    choice = _choice(pipeline, stage)
    fig = go.Figure()
    if choice is not None and choice.estimate:
        xs = [e["value"] for e in choice.estimate]
        upper = [_pct(e["mean"] + e["sd"]) for e in choice.estimate]
        lower = [_pct(e["mean"] - e["sd"]) for e in choice.estimate]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=upper + lower[::-1], fill="toself", mode="lines", line={"width": 0},
                                 fillcolor="rgba(31,119,180,0.15)", name="smoothed ± 1 sd", hoverinfo="skip"))  # fmt: skip
        fig.add_trace(go.Scatter(x=xs, y=[_pct(e["mean"]) for e in choice.estimate], mode="lines", name="smoothed estimate (chooses)",
                                 line={"color": "rgb(31,119,180)"}))  # fmt: skip
    seen = [o for o in choice.observations if not o.pruned] if choice is not None else []
    if not any(isinstance(o.value, str) for o in seen):  # drawn as a line: in the grid's order, not the trials'
        seen.sort(key=lambda o: (o.value, o.trial))
    if choice is None or choice.rule not in LATE_RULES:
        score_name = "val CAS"
    elif choice.rule == "soft":
        score_name = "soft val CAS (mean probability of the true class), mean ± sd of the last epochs"
    else:
        score_name = "val CAS, mean ± sd of the last epochs"
    if seen:
        spread = [_pct(o.spread) for o in seen]
        fig.add_trace(
            go.Scatter(
                x=[o.value for o in seen],
                y=[_pct(o.score) for o in seen],
                error_y={"type": "data", "array": spread, "visible": any(spread)},
                mode="markers" if choice.estimate else "lines+markers",
                name=score_name + (" (raw: one seed per point)" if choice.estimate else ""),
                marker={"color": "rgb(31,119,180)", "size": 8},
                customdata=[o.trial for o in seen],
                hovertemplate=f"{param} %{{x}}<br>score %{{y:.2f}}%<br>trial %{{customdata}}<extra></extra>",
            )
        )
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.params[param])
    tested = [t for t in complete if t.user_attrs.get("test_acc") is not None]
    fig.add_trace(
        go.Scatter(
            x=[t.params[param] for t in tested],
            y=[_pct(t.user_attrs["test_acc"]) for t in tested],
            mode="markers",
            name="test accuracy (not used to choose)" if pipeline.spec.selection == "val" else "test accuracy (selects: paper mode)",
            marker={"symbol": "diamond-open", "size": 8},
            opacity=0.7,
        )
    )
    pruned = [t for t in trials if t.state == TrialState.PRUNED and _trial_val(t) is not None]
    if pruned:
        fig.add_trace(
            go.Scatter(
                x=[t.params[param] for t in pruned],
                y=[_pct(_trial_val(t)) for t in pruned],
                mode="markers",
                name="pruned (val at the cut)",
                marker={"symbol": "x", "size": 9, "color": "gray"},
                customdata=[[t.number, max(t.intermediate_values)] for t in pruned],
                hovertemplate=f"{param} %{{x}}<br>val %{{y:.2f}}% at epoch %{{customdata[1]}}<br>trial %{{customdata[0]}}<extra></extra>",
            )
        )
    if choice is not None:
        label = f"chosen ({choice.rule}): {param} {_shown(choice.value)}"
        fig.add_trace(
            go.Scatter(
                x=[choice.value],
                y=[_pct(choice.score)],
                mode="markers",
                name=label,
                marker={"symbol": "star", "size": 18, "color": "crimson", "line": {"width": 1, "color": "black"}},
            )
        )
        fig.add_annotation(x=choice.value, y=_pct(choice.score), text=f"chosen {_shown(choice.value)}: {_pct(choice.score):.2f}%", showarrow=True, arrowhead=2, ay=-35)
    fig.update_layout(
        title=f"{pipeline.name} / {stage}: CAS against {param} (rule: {choice.rule if choice else pipeline.spec.stage(stage).rule})",
        xaxis_title=AXIS_TITLES[stage],
        yaxis_title="accuracy on real data (%)",
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    return fig


def _seed_curves(pipeline, stage: str, trials) -> go.Figure:
    fig = go.Figure()
    for trial in sorted(trials, key=lambda t: t.number):
        history = trial.user_attrs.get("val_history") or []
        test = trial.user_attrs.get("test_acc")
        label = f"seed {trial.params.get('seed', trial.number)}" + (f" (test {_pct(test):.2f}%)" if test is not None else "")
        fig.add_trace(go.Scatter(x=list(range(1, len(history) + 1)), y=[_pct(v) for v in history], mode="lines+markers", name=label))
    summary = pipeline.seed_summary(stage)
    subtitle = ""
    if summary:
        subtitle = f": test {_pct(summary['test']):.2f}% ± {_pct(summary['test_std']):.2f} over {summary['seeds']} seeds"
    fig.update_layout(
        title=f"{pipeline.name} / {stage}: val accuracy per epoch{subtitle}",
        xaxis_title="classifier epoch",
        yaxis_title="val accuracy (%)",
        template="plotly_white",
    )
    return fig


def val_curves_figure(pipeline, stage: str, top: int = BEST_CURVES) -> go.Figure | None:
    """Per-epoch val accuracy of the `top` best trials of a stage (pruned trials included, cut short)."""
    trials = [t for t in pipeline.finished_trials(stage) if t.user_attrs.get("val_history")]
    if not trials:
        return None
    param = SEARCHED[stage]
    ranked = sorted(trials, key=lambda t: (t.state != TrialState.COMPLETE, -(_trial_val(t) or 0.0), t.number))[:top]
    fig = go.Figure()
    for trial in ranked:
        history = trial.user_attrs["val_history"]
        pruned = " (pruned)" if trial.state == TrialState.PRUNED else ""
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(history) + 1)),
                y=[_pct(v) for v in history],
                mode="lines+markers",
                name=f"{param} {_shown(trial.params[param])}{pruned}",
                line={"dash": "dot"} if pruned else None,
            )
        )
    fig.update_layout(
        title=f"{pipeline.name} / {stage}: val accuracy per epoch of the {len(ranked)} best trials",
        xaxis_title="classifier epoch",
        yaxis_title="val accuracy (%)",
        template="plotly_white",
    )
    return fig


def history_figure(pipeline, stage: str) -> go.Figure | None:
    """Optuna's optimisation history of the stage (val CAS per trial, best so far)."""
    study = pipeline.stage_study(stage)
    if study is None or not pipeline.finished_trials(stage):
        return None
    fig = optuna.visualization.plot_optimization_history(study, target_name="val CAS")
    fig.update_layout(title=f"{pipeline.name} / {stage}: optimisation history")
    return fig


def pipeline_figures(pipeline) -> dict[str, go.Figure]:
    """Every figure of a pipeline, by file stem (`<stage>-cas`, `<stage>-curves`, `<stage>-history`)."""
    figures: dict[str, go.Figure] = {}
    with warnings.catch_warnings():  # some of optuna.visualization is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for stage in pipeline.stages:
            makers = {"cas": stage_figure, "curves": val_curves_figure, "history": history_figure}
            if stage in SEED_STAGES:
                makers = {"curves": stage_figure}  # per-seed curves are the key figure
            for suffix, make in makers.items():
                figure = make(pipeline, stage)
                if figure is not None:
                    figures[f"{stage}-{suffix}"] = figure
    return figures


def write_html(figures: dict[str, go.Figure], out_dir: str | Path, plotlyjs: str = "embed") -> list[Path]:
    """One HTML file per figure; `embed` puts plotly.js in each file, `directory` shares one copy beside them."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GafiError(f"cannot create output folder {out}: {exc.strerror}") from None
    include = True if plotlyjs == "embed" else "directory"
    paths = []
    for stem, figure in figures.items():
        path = out / f"{stem}.html"
        figure.write_html(path, include_plotlyjs=include, full_html=True)
        paths.append(path)
    return paths
