"""Sample grids as Optuna artifacts, and where a pipeline's artifact store lives.

Each trial's synthetic samples (one row per class, after filtering) are drawn into a
PNG and uploaded with `optuna.artifacts.upload_artifact` to a `FileSystemArtifactStore`.
The store's folder (by default `<run_dir>/artifacts`) is recorded, as an absolute path,
in the pipeline's root user attrs, so `gafi-opt dashboard --storage URL` finds it
without being told.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from PIL import Image, ImageDraw, ImageFont

from gafi_opt.errors import GafiError

if TYPE_CHECKING:  # torch stays unimported in `gafi-opt dashboard`, which only serves files
    import torch

ARTIFACT_DIR_ATTR = "artifact_dir"
GRID_FILENAME = "samples.png"
CELL_PIXELS = 48  # small images are scaled up (nearest neighbour) to about this size
LABEL_WIDTH = 28
PAD = 2


def default_artifact_dir(pipeline) -> Path:
    return (pipeline.spec.run_path / "artifacts").resolve()


def artifact_dir(pipeline) -> Path:
    """The pipeline's artifact folder: the recorded one, else `<run_dir>/artifacts`."""
    recorded = pipeline.attrs().get(ARTIFACT_DIR_ATTR)
    return Path(recorded) if recorded else default_artifact_dir(pipeline)


def register_artifact_dir(pipeline, directory: str | Path | None = None) -> Path:
    """Record where this pipeline's artifacts go (an explicit folder wins over a recorded one)."""
    if directory is None:
        path = artifact_dir(pipeline)
    else:
        path = Path(directory).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GafiError(f"cannot create artifact folder {path}: {exc.strerror}") from None
    if pipeline.attrs().get(ARTIFACT_DIR_ATTR) != str(path):
        pipeline.set_attr(ARTIFACT_DIR_ATTR, str(path))
    return path


class UnionArtifactStore:
    """Reads from several filesystem stores (artifact ids are UUIDs, so they never clash).

    A storage holding pipelines that keep artifacts in different folders is served
    by one dashboard; writes go to the first folder.
    """

    def __init__(self, directories: list[Path]):
        self.stores = [FileSystemArtifactStore(str(d)) for d in directories]

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for store in self.stores:
            try:
                return store.open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of the artifact folders")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        for store in self.stores:
            try:
                store.remove(artifact_id)
                return
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of the artifact folders")


def store_for_dirs(directories: list[Path]):
    """One folder: Optuna's FileSystemArtifactStore; several: a store reading from all."""
    unique = list(dict.fromkeys(Path(d) for d in directories))
    for directory in unique:
        if not directory.is_dir():
            raise GafiError(f"artifact folder {directory} does not exist")
    if len(unique) == 1:
        return FileSystemArtifactStore(str(unique[0]))
    return UnionArtifactStore(unique)


def sample_grid(samples: torch.Tensor) -> Image.Image:
    """A PNG-ready grid: one row per class (labelled on the left), one column per sample.

    `samples` is uint8 (classes, count, C, H, W) with C 1 or 3.
    """
    classes, count, channels, height, width = samples.shape
    scale = max(1, CELL_PIXELS // max(height, width))
    cell_h, cell_w = height * scale, width * scale
    grid = Image.new("RGB", (LABEL_WIDTH + count * (cell_w + PAD) + PAD, classes * (cell_h + PAD) + PAD), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for row in range(classes):
        top = PAD + row * (cell_h + PAD)
        draw.text((4, top + cell_h // 2 - 6), str(row), fill="black", font=font)
        for col in range(count):
            pixels = samples[row, col].permute(1, 2, 0).numpy()
            tile = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, "L" if channels == 1 else "RGB")
            tile = tile.resize((cell_w, cell_h), Image.NEAREST).convert("RGB")
            grid.paste(tile, (LABEL_WIDTH + PAD + col * (cell_w + PAD), top))
    return grid


def upload_sample_grid(trial: optuna.Trial, samples: torch.Tensor, store) -> str:
    """Draw the trial's samples and attach them to the (still running) trial; returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / GRID_FILENAME
        sample_grid(samples).save(path, format="PNG")
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype="image/png")


def copy_sample_grid(source: optuna.trial.FrozenTrial, trial: optuna.Trial, store, storage) -> str | None:
    """Attach `source`'s sample grid to `trial` too (a trial that reuses its result); None if it has none."""
    metas = [m for m in get_all_artifact_meta(source, storage=storage) if m.filename == GRID_FILENAME]
    if not metas:
        return None
    with tempfile.TemporaryDirectory() as tmp, store.open_reader(metas[0].artifact_id) as reader:
        path = Path(tmp) / GRID_FILENAME
        path.write_bytes(reader.read())
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype="image/png")
