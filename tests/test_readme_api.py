"""The README's Python API example runs as written (on the tiny digits pipeline's models, two trials)."""

import re

from conftest import ROOT, tiny_overrides

import gafi_opt
import gafi_opt.spec


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_example_runs(tiny_pipeline, monkeypatch):
    tiny_spec, _ = tiny_pipeline
    real_load_spec = gafi_opt.spec.load_spec

    def load_tiny(path, overrides=()):  # the example's study file, pointed at the tiny pipeline's models
        return real_load_spec(path, [*tiny_overrides(tiny_spec.run_path), *overrides])

    monkeypatch.setattr(gafi_opt.spec, "load_spec", load_tiny)
    monkeypatch.setattr(gafi_opt, "load_spec", load_tiny, raising=False)  # the public name, however it was first looked up
    monkeypatch.chdir(ROOT)
    code = readme_example()
    assert "n_trials=12" in code
    checkpoints = sorted(int(p.stem.split("_")[-1]) for p in (tiny_spec.run_path / "generator").glob("epoch_*.pt"))
    code = code.replace("n_trials=12", "n_trials=2").replace("50, 100, step=10", f"{checkpoints[0]}, {checkpoints[-1]}")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    study = namespace["study"]
    assert len(study.trials) == 2
    assert 0.0 <= study.best_value <= 1.0 and 0.0 <= study.best_trial.user_attrs["test_acc"] <= 1.0
