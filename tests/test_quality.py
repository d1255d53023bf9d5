"""Quality metrics beside CAS: Fréchet distance and k-NN precision/recall in the filter classifier's feature space,
recorded when a pipeline completes, shown in every export format and in the dashboard's root note."""

from __future__ import annotations

import csv
import json
import math
import re

import optuna_dashboard
import pytest
import torch
from click.testing import CliRunner

from gafi_opt.cas import TrialContext
from gafi_opt.cli import main
from gafi_opt.data import load_data
from gafi_opt.errors import GafiError
from gafi_opt.models.small import SmallCNN
from gafi_opt.pipeline import Pipeline
from gafi_opt.result.metrics import PenultimateFeatures, compare, features, frechet_distance, precision_recall
from gafi_opt.result.quality import measure_quality
from gafi_opt.train.real import load_filter


@pytest.fixture(scope="module")
def setting(tiny_pipeline):
    spec, url = tiny_pipeline
    data = load_data(spec.data)
    extractor = PenultimateFeatures(load_filter(spec, data.image_shape, data.num_classes, "cpu"))
    return spec, url, data, extractor


def test_a_set_against_itself_is_at_distance_zero_with_full_precision_and_recall(setting):
    _, _, data, extractor = setting
    same = compare(extractor, data.val_x, data.val_x.clone())
    assert same["fd"] == pytest.approx(0.0, abs=1e-6) and same["precision"] == same["recall"] == 1.0
    assert same["images"] == same["real_images"] == len(data.val_x)


def test_real_data_is_closer_to_real_data_than_noise_is(setting):
    _, _, data, extractor = setting
    n = len(data.val_x)
    real = compare(extractor, data.val_x, data.train_x[:n])
    noise = compare(extractor, data.val_x, torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    assert all(math.isfinite(v) for v in (*real.values(), *noise.values()))
    assert 0.0 < real["fd"] < noise["fd"]
    assert real["precision"] > noise["precision"] and real["recall"] > noise["recall"]
    assert 0.0 <= noise["precision"] <= 1.0 and 0.0 <= noise["recall"] <= 1.0


def test_precision_and_recall_agree_with_a_brute_force_count():
    generator = torch.Generator().manual_seed(1)
    real, fake = torch.randn(60, 5, generator=generator), torch.randn(45, 5, generator=generator) * 1.5 + 0.5
    k = 3

    def radius(points, i):  # distance to the k-th nearest other point, by sorting every distance
        return sorted(float((points[i] - points[j]).norm()) for j in range(len(points)) if j != i)[k - 1]

    def covered(points, centres):
        radii = [radius(centres, i) for i in range(len(centres))]
        return sum(any(float((p - c).norm()) <= r for c, r in zip(centres, radii)) for p in points) / len(points)

    precision, recall = precision_recall(real, fake, k)
    assert precision == pytest.approx(covered(fake, real)) and recall == pytest.approx(covered(real, fake))
    assert 0.0 < precision < 1.0 and 0.0 < recall < 1.0


def test_the_features_are_the_layer_before_the_head():
    model = SmallCNN(1, 10, width=4).eval()
    x = torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8)
    got = features(PenultimateFeatures(model), x)
    with torch.no_grad():
        expected = model.features(x.float() / 127.5 - 1)
    assert got.shape == (7, 8) and torch.allclose(got, expected)
    with pytest.raises(GafiError, match="no linear `head`"):
        PenultimateFeatures(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    with pytest.raises(GafiError, match="at least 2 images"):
        frechet_distance(PenultimateFeatures(model), x, x[:1])


def test_recorded_when_the_pipeline_completes_and_reproducible(setting):
    spec, url, data, _ = setting
    pipeline = Pipeline.load(url, spec.name)
    stored = pipeline.attrs()["quality"]
    assert stored["k"] == 3 and "penultimate layer (16 features)" in stored["features"]
    val_counts = torch.bincount(data.val_y).tolist()
    for part in ("baseline", "final", "real"):
        assert stored[part]["fd"] >= 0.0 and 0.0 <= stored[part]["precision"] <= 1.0 and 0.0 <= stored[part]["recall"] <= 1.0
        assert stored[part]["real_images"] == len(data.val_y)
    # The synthetic sets match val class by class (the tiny spec draws 40 per class, more than val has of any).
    assert stored["final"]["images"] == stored["baseline"]["images"] == sum(val_counts)
    # Measured again from the storage and the models: the same numbers (one seed, deterministic on a CPU).
    assert measure_quality(pipeline, TrialContext(spec, data, torch.device("cpu"))) == stored


def export(url, fmt):
    result = CliRunner().invoke(main, ["export", "--storage", url, "--format", fmt], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout  # stderr may carry warnings about the tiny models


def test_every_export_format_and_the_dashboard_show_them(setting):
    spec, url, _, _ = setting
    quality = Pipeline.load(url, spec.name).attrs()["quality"]
    expected = {
        f"{prefix}{metric}": quality[part][metric]
        for prefix, part in (("", "final"), ("synthetic_baseline_", "baseline"), ("real_", "real"))
        for metric in ("fd", "precision", "recall")
    }

    (row,) = json.loads(export(url, "json"))
    assert {key: row[key] for key in expected} == expected
    (row,) = list(csv.DictReader(export(url, "csv").splitlines()))
    assert {key: float(row[key]) for key in expected} == pytest.approx(expected, abs=1e-12)

    header, _, cells = export(url, "markdown").strip().splitlines()
    table = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in cells.strip("|").split("|")]))
    fd = re.fullmatch(r"([\d.]+) → ([\d.]+) \(real ([\d.]+)\)", table["FD: baseline → GaFi (real)"])
    assert [float(v) for v in fd.groups()] == pytest.approx([quality[p]["fd"] for p in ("baseline", "final", "real")], abs=0.005)
    recall = re.fullmatch(r"([\d.]+) → ([\d.]+) \(real ([\d.]+)\)", table["recall: baseline → GaFi (real)"])
    assert [float(v) for v in recall.groups()] == pytest.approx([quality[p]["recall"] for p in ("baseline", "final", "real")], abs=0.0005)

    latex = export(url, "latex")
    assert r"& FD & Precision & Recall \\" in latex
    assert f"{quality['baseline']['precision']:.3f} $\\rightarrow$ {quality['final']['precision']:.3f} ({quality['real']['precision']:.3f})" in latex

    note = optuna_dashboard.get_note(Pipeline.load(url, spec.name).root)
    assert "FD: baseline → GaFi (real)" in note and f"FD {fd.group(0)}" in note
