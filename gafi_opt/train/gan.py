"""Conditional GAN training: hinge loss, Adam, several D steps per G step, EMA generator, and
optionally DiffAugment (generator.diffaug) for small training sets.

After every epoch the EMA generator's weights are saved as that epoch's checkpoint, and
the whole training state (both networks, EMA, optimisers, RNG) as `state.pt`, so an
interrupted run resumes from the last finished epoch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gafi_opt.data import RealData, to_float
from gafi_opt.data.augment import diff_augment
from gafi_opt.data.fingerprint import bind_run_data
from gafi_opt.errors import GafiError
from gafi_opt.models import build_discriminator, build_generator
from gafi_opt.models.checkpoints import atomic_save, generator_dir, read_weights
from gafi_opt.spec import Spec
from gafi_opt.train.ema import ema_update

__all__ = ["ema_update", "train_generator"]


def train_generator(spec: Spec, data: RealData, device: torch.device, seed: int = 0, progress: bool = True) -> int:
    """Train (or resume) the spec's generator; returns the number of epochs done."""
    if spec.generator.checkpoints:
        raise GafiError("generator.checkpoints is set: this pipeline uses your checkpoints and trains no generator")
    bind_run_data(spec, data)  # checkpoints to resume must come from this same real train set
    gspec = spec.generator
    out = generator_dir(spec)
    state_path = out / "state.pt"
    torch.manual_seed(seed)
    generator = build_generator(gspec, data.image_shape, data.num_classes).to(device)
    discriminator = build_discriminator(gspec, data.image_shape, data.num_classes).to(device)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(generator.parameters(), lr=gspec.lr, betas=gspec.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=gspec.lr, betas=gspec.betas)
    epoch, step, d_step = 0, 0, 0
    if state_path.exists():
        state = _load_training_state(state_path)
        try:
            generator.load_state_dict(state["generator"])
            discriminator.load_state_dict(state["discriminator"])
            ema.load_state_dict(state["ema"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise GafiError(f"{state_path} does not fit the spec's generator: {' '.join(str(exc).split())[:200]}") from None
        epoch, step = int(state["epoch"]), int(state["step"])
        d_step = int(state.get("d_step", step * gspec.d_steps))
        torch.set_rng_state(state["rng"])
    if epoch >= gspec.epochs:
        return epoch

    images = data.train_x.to(device)
    labels = data.train_y.to(device)
    n = images.shape[0]
    batch = min(gspec.batch_size, n)
    bar = tqdm(total=gspec.epochs, initial=epoch, desc="generator", unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in range(epoch + 1, gspec.epochs + 1):
        order = torch.randperm(n, device=device)
        d_losses, g_losses = [], []
        for start in range(0, n - batch + 1, batch):
            idx = order[start : start + batch]
            d_losses.append(_discriminator_step(generator, discriminator, opt_d, to_float(images[idx]), labels[idx], gspec.diffaug))
            d_step += 1
            # Counted across epochs: a small (data-scarce) train set may give fewer batches per epoch than d_steps.
            if d_step % gspec.d_steps == 0:
                g_losses.append(_generator_step(generator, discriminator, opt_g, batch, data.num_classes, device, gspec.diffaug))
                step += 1
                ema_update(ema, generator, gspec.ema_decay if step > gspec.ema_start else 0.0)
        atomic_save(ema.state_dict(), out / f"epoch_{epoch:04d}.pt")
        atomic_save(
            {
                "generator": generator.state_dict(),
                "discriminator": discriminator.state_dict(),
                "ema": ema.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "epoch": epoch,
                "step": step,
                "d_step": d_step,
                "rng": torch.get_rng_state(),
            },
            state_path,
        )
        bar.update(1)
        bar.set_postfix(d_loss=f"{_mean(d_losses):.3f}", g_loss=f"{_mean(g_losses):.3f}")
    bar.close()
    return gspec.epochs


def _discriminator_step(generator, discriminator, opt_d, real, labels, diffaug=()) -> float:
    with torch.no_grad():
        z = torch.randn(real.shape[0], generator.latent_dim, device=real.device)
        fake = generator(z, labels)
    if diffaug:
        real, fake = diff_augment(real, diffaug), diff_augment(fake, diffaug)
    loss = F.relu(1.0 - discriminator(real, labels)).mean() + F.relu(1.0 + discriminator(fake, labels)).mean()
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    return loss.item()


def _generator_step(generator, discriminator, opt_g, batch, num_classes, device, diffaug=()) -> float:
    z = torch.randn(batch, generator.latent_dim, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    fake = generator(z, y)
    loss = -discriminator(diff_augment(fake, diffaug) if diffaug else fake, y).mean()
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    return loss.item()


def _load_training_state(path) -> dict:
    state = read_weights(path, "generator training state")
    if not isinstance(state, dict):
        raise GafiError(f"generator training state {path} is not one gafi-opt wrote")
    return state


def _mean(values) -> float:
    return sum(values) / len(values) if values else float("nan")
