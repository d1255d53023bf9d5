"""Model registry: classifiers, generators and their discriminators, built from the spec."""

from __future__ import annotations

import functools

from torch import nn

from gafi_opt.errors import GafiError
from gafi_opt.models.small import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, SmallCNN
from gafi_opt.spec import ClassifierSpec, GeneratorSpec

BUILTIN_GENERATORS = ("mlp", "dcgan", "biggan-deep", "diffusion")
CLASSIFIERS = ("small-cnn", "resnet20")


def _spec_errors(build):
    """A built-in model's ValueError (a width or image shape it cannot take) is bad input: a GafiError."""

    @functools.wraps(build)
    def wrapped(spec, image_shape, num_classes):
        try:
            return build(spec, image_shape, num_classes)
        except ValueError as exc:
            kind = "generator" if isinstance(spec, GeneratorSpec) else "classifier"
            raise GafiError(f"{kind} arch {spec.arch!r}: {exc}") from None

    return wrapped


@_spec_errors
def build_classifier(spec: ClassifierSpec, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if spec.arch == "small-cnn":
        return SmallCNN(image_shape[0], num_classes, width=spec.width)
    if spec.arch == "resnet20":
        from gafi_opt.models.resnet import resnet20

        return resnet20(image_shape[0], num_classes, width=spec.width)
    raise GafiError(f"unknown classifier arch {spec.arch!r} (known: {', '.join(CLASSIFIERS)})")


@_spec_errors
def build_generator(spec: GeneratorSpec, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if spec.arch == "mlp":
        return MLPGenerator(spec.latent_dim, num_classes, image_shape, width=spec.width)
    if spec.arch == "dcgan":
        return DCGANGenerator(spec.latent_dim, num_classes, image_shape, width=spec.width)
    if spec.arch == "biggan-deep":
        from gafi_opt.models.biggan import BigGANDeepGenerator

        return BigGANDeepGenerator(spec.latent_dim, num_classes, image_shape, width=spec.width, embed_dim=spec.embed_dim)
    if spec.arch == "diffusion":
        from gafi_opt.models.diffusion import build_diffusion_generator  # diffusers is an optional extra

        return build_diffusion_generator(spec, image_shape, num_classes)
    if ":" in spec.arch:
        from gafi_opt.models.factory import build_from_factory

        return build_from_factory(spec, image_shape, num_classes)
    raise GafiError(
        f"unknown generator arch {spec.arch!r} (known: {', '.join(BUILTIN_GENERATORS)}, or a factory 'package.module:function')"
    )


@_spec_errors
def build_discriminator(spec: GeneratorSpec, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if spec.arch == "mlp":
        return MLPDiscriminator(num_classes, image_shape, width=spec.width)
    if spec.arch == "dcgan":
        return DCGANDiscriminator(num_classes, image_shape, width=spec.width)
    if spec.arch == "biggan-deep":
        from gafi_opt.models.biggan import BigGANDeepDiscriminator

        return BigGANDeepDiscriminator(num_classes, image_shape, width=spec.width)
    if spec.arch == "diffusion":
        raise GafiError("generator arch 'diffusion' has no discriminator: it is trained by gafi_opt.train.diffusion")
    raise GafiError(f"generator arch {spec.arch!r} has no built-in discriminator: train it yourself and set generator.checkpoints")
