"""Bring your own diffusion model: a class-conditional diffusers UNet2DModel folder (`save_pretrained`).

A model folder holds `config.json` and `diffusion_pytorch_model.safetensors` (a UNet2DModel saved with
`unet.save_pretrained(folder)`), or is a saved pipeline whose `unet/` subfolder is one; its
`scheduler/scheduler_config.json`, when there, gives the noise schedule the model was trained on
(else the spec's generator.diffusion). `generator.checkpoints` names one model folder, or a folder
(or glob) of them: each is the checkpoint numbered by the last number in its name (a single folder
without one is checkpoint 1).

Nothing is fetched from a hub and no code is run from the folder: the config is read as JSON, the
UNet built from it, and the weights read from safetensors only (pickled `.bin` weights are refused).
Before any training, the model must fit the data: image side and channels, and num_classes + 1 class
embeddings (the data's classes, then the unconditional index that classifier-free guidance uses).
"""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path

from gafi_opt.errors import GafiError, one_line
from gafi_opt.spec import GeneratorSpec

CONFIG = "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED_WEIGHTS = "diffusion_pytorch_model.bin"
SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
_NUMBER = re.compile(r"(\d+)(?!.*\d)")  # the last number in a name


def unet_dir(folder: Path) -> Path | None:
    """Where the UNet's config lives in a model folder (itself, or its unet/ subfolder), or None."""
    for candidate in (folder, folder / "unet"):
        if (candidate / CONFIG).is_file():
            return candidate
    return None


def model_folders(pattern: str) -> dict[int, Path]:
    """Checkpoint number -> model folder, for `generator.checkpoints` of a diffusion generator."""
    if os.path.isdir(pattern) and unet_dir(Path(pattern)) is not None:
        match = _NUMBER.search(Path(pattern).name)
        return {int(match.group(1)) if match else 1: Path(pattern)}
    candidates = Path(pattern).iterdir() if os.path.isdir(pattern) else (Path(p) for p in glob.glob(pattern))
    found = {}
    for path in candidates:
        match = _NUMBER.search(path.name)
        if path.is_dir() and match and unet_dir(path) is not None:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def load_unet_folder(folder: Path, spec: GeneratorSpec, image_shape: tuple[int, int, int], num_classes: int):
    """A DiffusionGenerator with the folder's UNet, checked against the data. Raises GafiError in one line."""
    from gafi_opt.models.diffusion import DiffusionGenerator, noise_schedule  # diffusers is an optional extra

    where = unet_dir(folder)
    if where is None:
        raise GafiError(f"{folder} is not a diffusers model folder: no {CONFIG} in it or in its unet/ subfolder")
    config = _read_json(where / CONFIG)
    _check_config(config, where, tuple(image_shape), num_classes)
    unet = _build_unet(config, where)
    _load_weights(unet, where)
    schedule = noise_schedule(spec.diffusion)
    scheduler_file = where.parent / SCHEDULER_CONFIG if where.name == "unet" else None
    if scheduler_file is not None and scheduler_file.is_file():
        schedule.update(_read_json(scheduler_file))  # DiffusionGenerator keeps only the schedule's own keys
    d = spec.diffusion
    return DiffusionGenerator(unet, num_classes, schedule, sampler=d.sampler, steps=d.steps, guidance=d.guidance)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GafiError(f"cannot read {path}: {one_line(exc, 200)}") from None
    if not isinstance(value, dict):
        raise GafiError(f"{path} does not hold a JSON object")
    return value


def _check_config(config: dict, where: Path, image_shape: tuple[int, int, int], num_classes: int) -> None:
    kind = config.get("_class_name")
    if kind != "UNet2DModel":
        raise GafiError(f"{where} holds a {kind or 'model without _class_name'}, not a diffusers UNet2DModel")
    embeds = config.get("num_class_embeds")
    if config.get("class_embed_type") is not None or embeds is None:
        raise GafiError(f"the UNet2DModel in {where} is not class-conditional (it needs num_class_embeds = {num_classes + 1} and no class_embed_type)")
    if embeds != num_classes + 1:
        raise GafiError(
            f"the UNet2DModel in {where} has {embeds} class embeddings; the data has {num_classes} classes, so it needs "
            f"{num_classes + 1} (the classes, then index {num_classes} for the unconditional label of classifier-free guidance)"
        )
    channels, height, width = image_shape
    size = config.get("sample_size")
    side = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    model_shape = (config.get("in_channels"), *side)
    if model_shape != image_shape or config.get("out_channels") != channels:
        raise GafiError(
            f"the UNet2DModel in {where} makes {model_shape[0]}x{model_shape[1]}x{model_shape[2]} images "
            f"(in_channels x sample_size, out_channels {config.get('out_channels')}); the data's are {channels}x{height}x{width}"
        )


def _build_unet(config: dict, where: Path):
    import diffusers
    from diffusers import UNet2DModel

    verbosity = diffusers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()  # a config from another diffusers version lists keys this one ignores
    try:
        return UNet2DModel.from_config(config)
    except Exception as exc:  # a config diffusers cannot build (wrong block names, mismatched lengths)
        raise GafiError(f"cannot build the UNet2DModel of {where / CONFIG}: {one_line(exc, 200)}") from None
    finally:
        diffusers.logging.set_verbosity(verbosity)


def _load_weights(unet, where: Path) -> None:
    from safetensors.torch import load_file

    path = where / WEIGHTS
    if not path.is_file():
        if (where / PICKLED_WEIGHTS).is_file():
            raise GafiError(f"{where} holds only pickled weights ({PICKLED_WEIGHTS}); save them as safetensors (save_pretrained's default)")
        raise GafiError(f"{where} has no weights file {WEIGHTS}")
    try:
        state = load_file(str(path))
    except Exception as exc:  # truncated or foreign files raise several types
        raise GafiError(f"cannot read {path}: {one_line(exc, 200)}") from None
    try:
        unet.load_state_dict(state)
    except RuntimeError as exc:
        raise GafiError(f"the weights in {path} do not fit its {CONFIG}: {one_line(exc, 200)}") from None
