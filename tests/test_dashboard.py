"""The dashboard side of a pipeline: notes, sample grids, stage figures, and the real dashboard in Chromium."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import optuna
import optuna_dashboard
import pytest
from dashboard_browser import CHROMIUM, PNG_SIGNATURE, dashboard_server, inspect, study_id
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from PIL import Image

from gafi_opt.pipeline import Pipeline
from gafi_opt.report.artifacts import ARTIFACT_DIR_ATTR, CELL_PIXELS, PAD
from gafi_opt.report.dashboard import STAGE_FIGURE_ID
from gafi_opt.search.stages import STAGES
from gafi_opt.storages import open_storage


def _graph_json(study: optuna.Study) -> dict:
    prefix = f"dashboard:plot_data:{STAGE_FIGURE_ID}:"
    attrs = study._storage.get_study_system_attrs(study._study_id)
    chunks = sorted((int(k.removeprefix(prefix)), v) for k, v in attrs.items() if k.startswith(prefix))
    return json.loads("".join(v for _, v in chunks))


def test_every_trial_has_a_note_and_a_sample_grid(tiny_pipeline):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    directory = Path(pipeline.attrs()[ARTIFACT_DIR_ATTR])
    assert directory == (spec.run_path / "artifacts").resolve()
    store = FileSystemArtifactStore(str(directory))
    storage = open_storage(url)
    for stage in STAGES:
        study = pipeline.stage_study(stage)
        for trial in pipeline.finished_trials(stage):
            note = optuna_dashboard.get_note(optuna.Trial(study, trial._trial_id))
            assert f"### {stage} stage, trial {trial.number}" in note
            for label in ("| checkpoint |", "| stddev |", "| threshold |", "| recycle period |"):
                assert label in note
            (meta,) = get_all_artifact_meta(trial, storage=storage)
            assert meta.mimetype == "image/png" and meta.filename == "samples.png"
            with store.open_reader(meta.artifact_id) as reader:
                image = Image.open(io.BytesIO(reader.read()))
            # One row per class: 10 digits, 8x8 images scaled to CELL_PIXELS.
            assert image.format == "PNG" and image.height == 10 * (CELL_PIXELS + PAD) + PAD


def test_each_stage_study_carries_its_key_figure(tiny_pipeline):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    for stage in ("checkpoint", "stddev", "threshold"):
        figure = _graph_json(pipeline.stage_study(stage))
        choice = pipeline.choice(stage)
        (star,) = [t for t in figure["data"] if t.get("name", "").startswith("chosen")]
        assert star["x"] == [choice.value] and star["y"] == pytest.approx([100 * choice.score])
        assert f"CAS against {stage}" in figure["layout"]["title"]["text"]
    final = _graph_json(pipeline.stage_study("final"))
    assert len(final["data"]) == spec.final.seeds
    # The root study's note holds the result table once the stages are done.
    root_note = optuna_dashboard.get_note(pipeline.root)
    assert "| pipeline |" in root_note and f"| {spec.name} |" in root_note


def test_objective_is_named(tiny_pipeline):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    for stage in STAGES:
        assert pipeline.stage_study(stage).metric_names == ["val CAS"]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (.ci/services.sh installs it)")
def test_real_dashboard_in_chromium(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    stage = "checkpoint"
    trials = pipeline.finished_trials(stage)
    best = pipeline.best_trial(stage)
    screenshots = Path(os.environ["GAFI_SCREENSHOTS"]) if os.environ.get("GAFI_SCREENSHOTS") else None
    with dashboard_server(url, tmp_path / "dashboard.log") as base:
        report = inspect(base, study_id(url, pipeline.study_name(stage)), best.number, f"{spec.name} / {stage}: CAS against", screenshots)
    assert report.figure_title_found
    assert sorted(report.trial_items) == sorted(f"Trial {t.number}" for t in trials)
    assert report.note_text.startswith(f"{stage} stage, trial {best.number}")
    assert report.artifact_status == 200
    assert report.artifact_content_type == "image/png"
    assert report.artifact_bytes.startswith(PNG_SIGNATURE) and len(report.artifact_bytes) > 100
    width, height = report.image_natural_size
    assert (width, height) == Image.open(io.BytesIO(report.artifact_bytes)).size and height > 0
    assert report.console_errors == []
    assert report.failed_requests == []


def test_one_dashboard_reads_several_artifact_folders(tmp_path):
    from optuna.artifacts.exceptions import ArtifactNotFound

    from gafi_opt.errors import GafiError
    from gafi_opt.report.artifacts import UnionArtifactStore, store_for_dirs

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    FileSystemArtifactStore(str(first)).write("id-1", io.BytesIO(b"one"))
    FileSystemArtifactStore(str(second)).write("id-2", io.BytesIO(b"two"))
    assert isinstance(store_for_dirs([first, first]), FileSystemArtifactStore)
    union = store_for_dirs([first, second])
    assert isinstance(union, UnionArtifactStore)
    assert union.open_reader("id-1").read() == b"one" and union.open_reader("id-2").read() == b"two"
    with pytest.raises(ArtifactNotFound):
        union.open_reader("id-3")
    with pytest.raises(GafiError, match="does not exist"):
        store_for_dirs([tmp_path / "missing"])
