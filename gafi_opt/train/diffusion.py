"""Class-conditional diffusion training: noise prediction (or velocity) on the DDPM forward process,
label dropout for classifier-free guidance, Adam, EMA weights.

Each batch noises real images at uniformly drawn timesteps and regresses the UNet's output on the
noise (prediction_type "epsilon") or the velocity ("v_prediction"); a share `label_dropout` of the
labels is replaced by the unconditional index, so one model gives both terms of guidance.

Checkpoints are the GAN trainer's (gafi_opt.train.gan): after every epoch the EMA generator's state
dict as `<run_dir>/generator/epoch_NNNN.pt`, and the whole training state as `state.pt`. Every random
draw of training (batch order, timesteps, noise, dropped labels) comes from one torch.Generator
whose state is saved with it, so an interrupted run resumed gives the weights of one never stopped.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gafi_opt.data import RealData, to_float
from gafi_opt.data.fingerprint import bind_run_data
from gafi_opt.errors import GafiError, one_line
from gafi_opt.models import build_generator
from gafi_opt.models.checkpoints import atomic_save, generator_dir
from gafi_opt.models.diffusion import training_scheduler
from gafi_opt.spec import Spec
from gafi_opt.train.ema import ema_update

MAX_GRAD_NORM = 1.0  # diffusers' training examples clip at 1: a bad batch at a small timestep cannot throw the model off
STATE_KIND = "diffusion"  # recorded in state.pt, so a GAN's state in the same run dir is refused by name


def train_diffusion(spec: Spec, data: RealData, device: torch.device, seed: int = 0, progress: bool = True) -> int:
    """Train (or resume) the spec's diffusion generator; returns the number of epochs done."""
    if spec.generator.checkpoints:
        raise GafiError("generator.checkpoints is set: this pipeline uses your checkpoints and trains no generator")
    bind_run_data(spec, data)  # checkpoints to resume must come from this same real train set
    gspec = spec.generator
    out = generator_dir(spec)
    state_path = out / "state.pt"
    torch.manual_seed(seed)  # the initial weights
    model = build_generator(gspec, data.image_shape, data.num_classes).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(model.unet.parameters(), lr=gspec.lr, betas=gspec.betas)
    rng = torch.Generator(device=device).manual_seed(seed)
    epoch, step = 0, 0
    if state_path.exists():
        epoch, step = _resume(state_path, model, ema, optimizer, rng)
    if epoch >= gspec.epochs:
        return epoch

    noising = training_scheduler(model.schedule)
    images = data.train_x.to(device)
    labels = data.train_y.to(device)
    n = images.shape[0]
    batch = min(gspec.batch_size, n)
    bar = tqdm(total=gspec.epochs, initial=epoch, desc="diffusion", unit="epoch", disable=not progress, dynamic_ncols=True)
    model.train()
    for epoch in range(epoch + 1, gspec.epochs + 1):
        order = torch.randperm(n, device=device, generator=rng)
        losses = []
        for start in range(0, n - batch + 1, batch):
            idx = order[start : start + batch]
            losses.append(_step(model, noising, optimizer, to_float(images[idx]), labels[idx], gspec.diffusion.label_dropout, rng))
            step += 1
            ema_update(ema, model, gspec.ema_decay if step > gspec.ema_start else 0.0)
        atomic_save(ema.state_dict(), out / f"epoch_{epoch:04d}.pt")
        atomic_save(
            {
                "kind": STATE_KIND,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "step": step,
                "rng": rng.get_state(),
            },
            state_path,
        )
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses) / max(1, len(losses)):.4f}")
    bar.close()
    return gspec.epochs


def _step(model, noising, optimizer, clean: torch.Tensor, labels: torch.Tensor, label_dropout: float, rng: torch.Generator) -> float:
    """One denoising regression step; returns the loss."""
    n, device = clean.shape[0], clean.device
    noise = torch.randn(clean.shape, device=device, generator=rng)
    timesteps = torch.randint(0, noising.config.num_train_timesteps, (n,), device=device, generator=rng)
    dropped = torch.rand(n, device=device, generator=rng) < label_dropout
    labels = torch.where(dropped, torch.full_like(labels, model.null_class), labels)
    noisy = noising.add_noise(clean, noise, timesteps)
    target = noise if noising.config.prediction_type == "epsilon" else noising.get_velocity(clean, noise, timesteps)
    loss = F.mse_loss(model.unet(noisy, timesteps, class_labels=labels).sample, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.unet.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    return loss.item()


def _resume(path, model, ema, optimizer, rng: torch.Generator) -> tuple[int, int]:
    """Load a training state into the objects; returns (epoch, step)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise GafiError(f"cannot read generator training state {path}: {one_line(exc, 200)}") from None
    if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
        raise GafiError(f"{path} is not a diffusion generator's training state (another generator.arch trained this run dir?)")
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        return int(state["epoch"]), int(state["step"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise GafiError(f"{path} does not fit the spec's diffusion generator: {one_line(exc, 200)}") from None
