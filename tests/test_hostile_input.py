"""Hostile input, tried as an adversary would: each refused with one line naming it, exit status 2,
before anything is trained; nothing finished is lost and nothing hangs."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import DIGITS, ROOT, assert_user_error, tiny_overrides

from gafi_opt.cli import main
from gafi_opt.errors import GafiError
from gafi_opt.spec import ClassifierSpec, DataSpec, GeneratorSpec, Spec, StageSpec, SynthSpec, load_spec
from gafi_opt.storages import redact, redact_text, scrub


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_no_torch_advice(line: str):
    """Never PyTorch's advice to load with weights_only=False (that runs code from the file), nor its internals."""
    for phrase in ("weights_only", "safe_globals", "can still be loaded", "trust the source", "list index out of range", "Re-running"):
        assert phrase not in line, line


# ---------------------------------------------------------------- 2. checkpoint file names


def test_a_file_that_is_not_a_checkpoint_name_is_refused_not_read_as_an_epoch(byo_checkpoints):
    # Before: the epoch was the last number in a name, so this backup of epoch 3 became epoch 2.
    folder, overrides = byo_checkpoints
    shutil.copy(folder / "epoch_0003.pt", folder / "epoch_0003_backup2.pt")
    line = assert_user_error(invoke("run", DIGITS, "--quiet", *sets(overrides)), "epoch_0003_backup2.pt", "is not a checkpoint name")
    assert "epoch_0012.pt" in line  # says what a name looks like


def test_two_files_for_one_epoch_are_refused_naming_both(byo_checkpoints):
    # Before: whichever the glob listed last won.
    folder, overrides = byo_checkpoints
    shutil.copy(folder / "epoch_0002.pt", folder / "epoch_2.pt")
    assert_user_error(invoke("run", DIGITS, "--quiet", *sets(overrides)), "epoch 2", str(folder / "epoch_0002.pt"), str(folder / "epoch_2.pt"))


def test_a_glob_is_held_to_the_same_names(byo_checkpoints, tmp_path):
    folder, overrides = byo_checkpoints
    (folder / "notes.txt").write_text("trained on Tuesday")
    # A folder takes its *.pt files, so the notes are no checkpoint; a glob that matches them is refused.
    glob_overrides = overrides[:-1] + [f"generator.checkpoints={folder}/*"]
    assert_user_error(invoke("run", DIGITS, "--quiet", *sets(glob_overrides)), "notes.txt", "is not a checkpoint name")


def test_checkpoint_names_accepted():
    from gafi_opt.models.checkpoints import CHECKPOINT_NAME

    epochs = {name: int(m.group(1)) for name in ("epoch_0012.pt", "12.pt", "gen_epoch12.pt", "ckpt-12.pth") if (m := CHECKPOINT_NAME.fullmatch(name))}
    assert epochs == {"epoch_0012.pt": 12, "12.pt": 12, "gen_epoch12.pt": 12, "ckpt-12.pth": 12}
    for name in ("epoch_0004_backup2.pt", "epoch_12.pt.bak", "v2_epoch12.pt", "epoch.pt", "state.pt"):
        assert CHECKPOINT_NAME.fullmatch(name) is None, name


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"root:x:0:0:root:/root:/bin/bash\n", "not a file of weights written by torch.save"),  # torch: "list index out of range"
        (b"# a study file\nname = 'x'\n", "not a file of weights written by torch.save"),  # torch: advice to use weights_only=False
        (b"", "empty or cut short"),
        (b"PK\x03\x04" + bytes(40), "not a file of weights written by torch.save"),
    ],
)
def test_a_checkpoint_linked_to_a_file_that_is_not_one(byo_checkpoints, tmp_path, content, fragment):
    folder, overrides = byo_checkpoints
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(content)
    (folder / "epoch_0003.pt").unlink()
    (folder / "epoch_0003.pt").symlink_to(target)
    line = assert_user_error(invoke("run", DIGITS, "--quiet", *sets(overrides)), "cannot read checkpoint", "epoch_0003.pt", str(target), fragment)
    assert_no_torch_advice(line)


def test_pickled_code_is_refused_without_advice_to_run_it(byo_checkpoints, tmp_path):
    folder, overrides = byo_checkpoints
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": Exploit()}, folder / "epoch_0003.pt")
    line = assert_user_error(invoke("run", DIGITS, "--quiet", *sets(overrides)), "epoch_0003.pt", "never runs code from a file")
    assert_no_torch_advice(line)
    assert not marker.exists()


def _numpy_pickle(path: Path):
    torch.save({"state_dict": {"w": np.zeros(3)}, "val_acc": 0.5, "test_acc": 0.5, "epoch": 1}, path)


def test_a_filter_classifier_that_holds_more_than_weights(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _numpy_pickle(run_dir / "filter.pt")
    line = assert_user_error(invoke("run", DIGITS, "--quiet", *sets(tiny_overrides(run_dir))), "cannot read filter classifier", "filter.pt")
    assert_no_torch_advice(line)


def test_a_generator_training_state_that_holds_more_than_weights(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "generator").mkdir(parents=True)
    _numpy_pickle(run_dir / "generator" / "state.pt")
    result = invoke("train-generator", DIGITS, "--quiet", *sets(tiny_overrides(run_dir)))
    line = assert_user_error(result, "cannot read generator training state", "state.pt")
    assert_no_torch_advice(line)


# ---------------------------------------------------------------- 5. sizes and labels


def test_a_huge_grid_is_counted_not_built(tmp_path):
    result = invoke("run", DIGITS, *sets(tiny_overrides(tmp_path / "run")), "--set", "stddev.values={start=1.0,stop=1e12,step=1e-9}")
    assert_user_error(result, "stddev.values", "1e+21 grid points", "10000")
    assert not (tmp_path / "run").exists()
    with pytest.raises(GafiError, match="lists 10001 values, more than 10000"):
        load_spec(DIGITS, [f"threshold.values=[{', '.join(['0.5'] * 10001)}]"])


def _npz(path: Path, train, test, side: int = 8, val=None) -> Path:
    """A MedMNIST-layout archive with random 8x8 images for the given label lists."""
    rng = np.random.default_rng(0)
    arrays = {}
    for key, labels in (("train", train), ("val", val), ("test", test)):
        if labels is None:
            continue
        arrays[f"{key}_images"] = rng.integers(0, 256, size=(len(labels), side, 8), dtype=np.uint8)
        arrays[f"{key}_labels"] = np.asarray(labels, dtype=np.int64).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


THREE_CLASSES = [c for c in range(3) for _ in range(10)]


@pytest.mark.parametrize(
    "train, test, fragments",
    [
        (THREE_CLASSES + [50000], [0, 1, 2], ["label 50000 makes 50001 classes", "more than 10000"]),
        ([0] * 30, [0, 0], ["a single class", "at least 2"]),
        (THREE_CLASSES, [0, 1, 2, 3], ["class 3 has no train images (only in test)"]),
        (THREE_CLASSES, [], ["the test split has no images"]),
    ],
)
def test_labels_that_are_not_classes_with_train_images(tmp_path, train, test, fragments):
    path = _npz(tmp_path / "mine.npz", train, test)
    overrides = tiny_overrides(tmp_path / "run") + ["data.source=npz", f"data.root={path}"]
    assert_user_error(invoke("run", DIGITS, "--quiet", *sets(overrides)), "mine", *fragments)
    assert not (tmp_path / "run" / "filter.pt").exists()


def test_an_empty_val_split_is_refused(tmp_path):
    path = _npz(tmp_path / "mine.npz", THREE_CLASSES, [0, 1, 2], val=[])
    overrides = tiny_overrides(tmp_path / "run") + ["data.source=npz", f"data.root={path}"]
    assert_user_error(invoke("train-classifier", DIGITS, "--quiet", *sets(overrides)), "the val split has no images")


def test_images_larger_than_the_limit_are_refused(tmp_path):
    path = _npz(tmp_path / "tall.npz", THREE_CLASSES, [0, 1, 2], side=1100)
    overrides = tiny_overrides(tmp_path / "run") + ["data.source=npz", f"data.root={path}"]
    assert_user_error(invoke("run", DIGITS, "--quiet", *sets(overrides)), "train_images", "8x1100", "larger than 1024x1024")


def test_a_folder_image_larger_than_the_limit_is_refused_before_decoding(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            Image.new("L", (8, 8)).save(tmp_path / "data" / split / label / "0.png")
    Image.new("L", (2000, 8)).save(tmp_path / "data" / "train" / "b" / "wide.png")
    overrides = tiny_overrides(tmp_path / "run") + ["data.source=folder", f"data.root={tmp_path / 'data'}"]
    assert_user_error(invoke("train-classifier", DIGITS, "--quiet", *sets(overrides)), "wide.png", "2000x8", "larger than 1024x1024")


def test_an_image_count_past_the_limit_is_refused_from_the_header(tmp_path):
    """The header claims 20 million images: refused before a byte of them is read (or allocated)."""
    path = _npz(tmp_path / "huge.npz", THREE_CLASSES, [0, 1, 2])
    with zipfile.ZipFile(path) as archive:  # replace train_images by a header alone
        names = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    header = {"descr": "|u1", "fortran_order": False, "shape": (20_000_000, 8, 8)}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in names.items():
            if name == "train_images.npy":
                with archive.open(name, "w") as member:
                    np.lib.format.write_array_header_1_0(member, header)
            else:
                archive.writestr(name, data)
    overrides = tiny_overrides(tmp_path / "run") + ["data.source=npz", f"data.root={path}"]
    assert_user_error(invoke("run", DIGITS, "--quiet", *sets(overrides)), "train_images", "20000000 items, more than 10000000")


# ---------------------------------------------------------------- 7, 9. every number, up front

BAD_NUMBERS = [
    ("checkpoint.values=[nan]", "checkpoint.values must be a finite number, got nan"),
    ("checkpoint.values=[inf]", "checkpoint.values must be a finite number, got inf"),
    ("checkpoint.values=[1000000000]", "checkpoint.values must be whole epochs in [1, 100000]"),
    ("synth.samples_per_class=1000000000", "synth.samples_per_class must be in [0, 100000]"),
    ("synth.samples_per_class=-5", "synth.samples_per_class must be in [0, 100000]"),
    ("synth.batch_size=0", "synth.batch_size must be in [1, 65536]"),
    ("synth.max_attempts=0", "synth.max_attempts must be in [1, 1000]"),
    ("cas.lr=-1", "cas.lr must be in (0, 10]"),
    ("filter.momentum=1.0", "filter.momentum must be in [0, 1)"),
    ("cas.weight_decay=-0.1", "cas.weight_decay must be in [0, 1)"),
    ("cas.eval_batch_size=0", "cas.eval_batch_size must be in [1, 65536]"),
    ("filter.lr_milestones=[0.5, 1.5]", "filter.lr_milestones must each be in (0, 1)"),
    ("generator.width=0", "generator.width must be in [1, 4096]"),
    ("generator.latent_dim=1e9", "generator.latent_dim must be an integer"),
    ("generator.latent_dim=1000000000", "generator.latent_dim must be in [1, 16384]"),
    ("generator.betas=[0.5, 2.0]", "generator.betas must each be in [0, 1)"),
    ("generator.ema_decay=1.5", "generator.ema_decay must be in [0, 1)"),
    ("generator.d_steps=0", "generator.d_steps must be in [1, 100]"),
    ("seed=99999999999999999", "seed must be in [0, 2147483647]"),
    ("seed=-1", "seed must be in [0, 2147483647]"),
    ("data.split_seed=4294967296", "data.split_seed must be in [0, 2147483647]"),
    ("data.image_size=100000", "data.image_size must be in [0, 1024]"),
    ("data.val_fraction=nan", "data.val_fraction must be a finite number, got nan"),
    ("final.seeds=100000", "final.seeds must be in [1, 1000]"),
    ("stddev.pruner_warmup=-1", "stddev.pruner_warmup must be in [0, 100000]"),
    ("checkpoint.n_trials=1000000", "checkpoint.n_trials must be in [0, 10000]"),
    # 9: nan != nan made a brand-new storage say "already exists ... with a different spec"
    ("cas.lr=nan", "cas.lr must be a finite number, got nan"),
    ("augment_ratio=nan", "augment_ratio must be a finite number, got nan"),
    ("augment_ratio=1e6", "augment_ratio must be in (0, 100]"),
    ("stddev.values=[nan]", "stddev.values must be a finite number, got nan"),
    ("stddev.values=[inf]", "stddev.values must be a finite number, got inf"),
    ("stddev.values={start=1.0, stop=inf, step=0.1}", "stddev.values.stop must be a finite number, got inf"),
    ("generator.options={scale=nan}", "generator.options.scale must be a finite number, got nan"),
]


@pytest.mark.parametrize("override, message", BAD_NUMBERS, ids=[o for o, _ in BAD_NUMBERS])
def test_a_bad_number_is_refused_before_anything_is_made(tmp_path, override, message):
    run_dir = tmp_path / "run"
    storage = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = invoke("run", DIGITS, "--storage", storage, *sets(tiny_overrides(run_dir)), "--set", override)
    assert_user_error(result, message)
    assert not run_dir.exists() and not (tmp_path / "fresh.db").exists()


@pytest.mark.parametrize(
    "override, message",
    [("generator.batch_size=0", "generator.batch_size must be in [1, 65536]"), ("generator.lr=nan", "generator.lr must be a finite number")],
)
def test_train_generator_refuses_a_bad_number_before_training(tmp_path, override, message):
    run_dir = tmp_path / "run"
    assert_user_error(invoke("train-generator", DIGITS, *sets(tiny_overrides(run_dir)), "--set", override), message)
    assert not run_dir.exists()


def test_the_edges_of_the_ranges_are_accepted():
    spec = load_spec(DIGITS, ["seed=2147483647", "generator.betas=[0.0, 0.999]", "cas.momentum=0.0", "cas.weight_decay=0", "data.image_size=1024"])
    assert spec.seed == 2147483647 and spec.generator.betas == (0.0, 0.999)


def _is_number(hint) -> bool:
    if hint in (int, float):
        return True
    return typing.get_origin(hint) is tuple and all(arg in (int, float, Ellipsis) for arg in typing.get_args(hint))


def test_every_number_of_the_spec_has_a_range():
    from gafi_opt.spec import RANGES

    import gafi_opt.spec as specs

    for cls in (Spec, DataSpec, GeneratorSpec, ClassifierSpec, SynthSpec, StageSpec, specs.DiffusionSpec, specs.SamplerStageSpec):
        hints = typing.get_type_hints(cls)
        numbers = {f.name for f in dataclasses.fields(cls) if _is_number(hints[f.name])}
        if issubclass(cls, StageSpec):
            numbers.discard("values")  # each stage's own range, checked in _validate
        assert numbers <= set(RANGES.get(cls, {})), f"{cls.__name__}: no range for {sorted(numbers - set(RANGES.get(cls, {})))}"


# ---------------------------------------------------------------- 8. a full disk


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_a_checkpoint_is_written_and_the_resume_after(tmp_path):
    """Writing to /dev/full fails with ENOSPC for real: the checkpoint's temporary file is pointed there."""
    run_dir = tmp_path / "run"
    (run_dir / "generator").mkdir(parents=True)
    (run_dir / "generator" / "epoch_0002.pt.tmp").symlink_to("/dev/full")
    args = ["train-generator", DIGITS, "--quiet", *sets(tiny_overrides(run_dir))]
    result = invoke(*args)
    assert_user_error(result, str(run_dir / "generator" / "epoch_0002.pt"), "no space left on device")
    assert sorted(p.name for p in (run_dir / "generator").iterdir()) == ["epoch_0001.pt", "state.pt"]
    assert torch.load(run_dir / "generator" / "state.pt", weights_only=True)["epoch"] == 1

    # Space freed: the rerun resumes after epoch 1 and ends where an uninterrupted run ends.
    assert invoke(*args).exit_code == 0
    reference = tmp_path / "reference"
    assert invoke("train-generator", DIGITS, "--quiet", *sets(tiny_overrides(reference))).exit_code == 0
    resumed = torch.load(run_dir / "generator" / "epoch_0003.pt", weights_only=True)
    straight = torch.load(reference / "generator" / "epoch_0003.pt", weights_only=True)
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)


# ---------------------------------------------------------------- 10. smaller ones


def test_ctrl_c_in_train_generator_speaks_of_its_epochs_not_a_storage(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "gafi_opt.cli", "train-generator", str(DIGITS), "--quiet"]
    command += sets(tiny_overrides(run_dir) + ["generator.epochs=10000"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A shell that starts the suite in the background has SIGINT ignored, and a child inherits that:
    # the child gets Ctrl-C as a terminal would deliver it.
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "generator" / "epoch_0002.pt").exists():
            assert process.poll() is None and time.monotonic() < deadline, "train-generator did not reach epoch 2"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("gafi-opt: interrupted; ") and "last finished epoch is kept" in lines[0] and "resume" in lines[0]
    assert "storage" not in lines[0] and "trials" not in lines[0]
    assert not list((run_dir / "generator").glob("*.tmp"))  # nothing half-written left behind


class SendsCtrlC:
    """Pickled inside torch.save, it sends this process SIGINT `times` times: Ctrl-C in the middle of a save."""

    def __init__(self, times: int):
        self.times = times

    def __reduce__(self):
        for _ in range(self.times):
            os.kill(os.getpid(), signal.SIGINT)
        return (int, (7,))


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C as Python takes it by default (a suite started in the background has SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_the_middle_of_a_save_waits_for_the_file_then_stops(tmp_path, ctrl_c_raises):
    from gafi_opt.models.checkpoints import atomic_save

    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"weights": torch.ones(3), "marker": SendsCtrlC(1)}, path)
    saved = torch.load(path, weights_only=False)  # our own file: whole, then the stop
    assert saved["marker"] == 7 and torch.equal(saved["weights"], torch.ones(3))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # A second Ctrl-C stops at once, leaving nothing behind.
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"marker": SendsCtrlC(2)}, tmp_path / "other.pt")
    assert not (tmp_path / "other.pt").exists() and not list(tmp_path.glob("*.tmp"))


def test_a_study_file_that_starts_with_a_bom(tmp_path):
    bom = tmp_path / "digits.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + DIGITS.read_bytes())
    assert load_spec(bom) == load_spec(DIGITS)
    # Through the command line, the next problem is the one reported, not "Invalid statement".
    assert_user_error(invoke("run", bom, "--set", "cas.lr=-1"), "cas.lr must be in (0, 10]")


# (URL, redacted, what a driver may say about it, fragments of the password that must never show)
AT_PASSWORDS = [
    (
        "postgresql+psycopg://postgres:sec@ret@127.0.0.1:5432/gafi",
        "postgresql+psycopg://postgres:***@127.0.0.1:5432/gafi",
        "failed to resolve host 'ret@127.0.0.1'",  # the driver cut the password at its first '@'
        ["sec", "ret@"],
    ),
    ("postgresql+psycopg://alice:a@b@c@db.example/gafi", "postgresql+psycopg://alice:***@db.example/gafi", "host 'b@c@db.example'", ["a@b", "b@c", "c@db"]),
    ("postgresql+psycopg://alice:pa%40ss@db.example/gafi", "postgresql+psycopg://alice:***@db.example/gafi", "password pa@ss rejected", ["pa%40ss", "pa@ss"]),
    (
        "postgresql+psycopg://alice:hunter2@db.example/gafi?sslmode=require",
        "postgresql+psycopg://alice:***@db.example/gafi?sslmode=require",
        "password hunter2 rejected",
        ["hunter2"],
    ),
    ("postgresql+psycopg://alice@db.example/gafi", "postgresql+psycopg://alice@db.example/gafi", "no password supplied", []),
    ("sqlite:///runs/a@b/gafi.db", "sqlite:///runs/a@b/gafi.db", "unable to open database file", []),
]


@pytest.mark.parametrize("url, redacted, driver_says, secrets", AT_PASSWORDS, ids=[u for u, *_ in AT_PASSWORDS])
def test_a_password_with_an_at_sign_is_hidden_whole(url, redacted, driver_says, secrets):
    assert redact(url) == redacted
    text = redact_text(f"cannot connect to '{url}': timeout; again {url}")
    assert text == f"cannot connect to '{redacted}': timeout; again {redacted}"
    scrubbed = scrub(f"{url}: {driver_says}", url)
    assert scrubbed.startswith(f"{redacted}: ")
    for secret in secrets:
        assert secret not in text and secret not in scrubbed, scrubbed


def test_a_password_with_an_at_sign_through_the_command_line():
    result = invoke("status", "--storage", "postgresql+psycopg://alice:sec@ret@127.0.0.1:1/nowhere")
    line = assert_user_error(result, "alice:***@127.0.0.1:1/nowhere", "%40")
    assert "sec" not in line and "ret@" not in line
