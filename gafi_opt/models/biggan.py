"""BigGAN-deep (Brock et al., 2019, appendix B) for small square images.

Generator: a shared class embedding e(y); the whole latent z is concatenated with it,
c = [z, e(y)], and c conditions every batch norm (gain 1 + W_g c, bias W_b c). A linear
layer maps c to a 4x4 map, then each resolution step has two bottleneck residual blocks
(the first keeps the resolution, the second upsamples x2 with nearest neighbours), a
SAGAN non-local block follows the block that reaches 16x16, and BN-ReLU-conv3x3-tanh
gives the image. Blocks: BN-ReLU-conv1x1 (channels / 4), BN-ReLU-[upsample]-conv3x3,
BN-ReLU-conv3x3, BN-ReLU-conv1x1 (to the output channels), added to a skip that is the
identity with surplus channels dropped (and upsampled when the block upsamples).

Discriminator: the mirror image. conv3x3 to `width` channels, then per resolution a
downsampling block and a plain block (ReLU-conv1x1 (out / 4), ReLU-conv3x3, ReLU-conv3x3,
ReLU-[avgpool]-conv1x1; skip: [avgpool] and, when channels grow, the input concatenated
with a learned 1x1 conv for the extra channels), a non-local block at 16x16, down to
4x4, then ReLU, global sum pooling and a projection head.

Every conv and linear layer of both networks is spectrally normalised; weights start
orthogonal. `width` channels are used at every resolution (the paper's 32x32 setting
uses 4 * ch = 512), so any square power-of-two side >= 8 is supported: 4 -> 8 -> ... -> side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gafi_opt.models.small import ProjectionHead

CHANNEL_RATIO = 4  # bottleneck: the 3x3 convs of a block work on channels / 4


def _sn(module: nn.Module) -> nn.Module:
    """Orthogonal init (BigGAN), then spectral norm; init first so the power-iteration vectors match."""
    nn.init.orthogonal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return spectral_norm(module)


def sn_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Module:
    return _sn(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias))


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    return _sn(nn.Linear(in_features, out_features, bias=bias))


def _resolutions(image_shape: tuple[int, int, int], width: int, who: str) -> int:
    """Validate the image shape and width; return the number of x2 steps between 4x4 and the image."""
    if len(image_shape) != 3:
        raise ValueError(f"{who} needs an image shape (channels, height, width), got {tuple(image_shape)}")
    _, height, img_width = image_shape
    if height != img_width or height < 8 or height & (height - 1):
        raise ValueError(
            f"{who} needs square images with a power-of-two side >= 8 (8, 16, 32, 64, ...), "
            f"got {height}x{img_width}; pad the images (data.image_size = 32 for 28x28 data)"
        )
    if width < 8 or width % CHANNEL_RATIO:
        raise ValueError(f"{who} needs a width that is a multiple of {CHANNEL_RATIO} and >= 8, got {width}")
    return int(math.log2(height)) - 2


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without affine parameters; gain and bias are linear in the condition vector."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = sn_linear(cond_dim, channels, bias=False)
        self.bias = sn_linear(cond_dim, channels, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = 1 + self.gain(cond)[:, :, None, None]
        bias = self.bias(cond)[:, :, None, None]
        return self.bn(x) * gain + bias


class SelfAttention(nn.Module):
    """SAGAN non-local block: out = x + gamma * o(softmax(theta^T phi) g), phi and g max-pooled x2."""

    def __init__(self, channels: int):
        super().__init__()
        self.key_channels = max(1, channels // 8)
        self.value_channels = max(1, channels // 2)
        self.theta = sn_conv(channels, self.key_channels, 1, bias=False)
        self.phi = sn_conv(channels, self.key_channels, 1, bias=False)
        self.g = sn_conv(channels, self.value_channels, 1, bias=False)
        self.o = sn_conv(self.value_channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (n, k, hw)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # (n, k, hw/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # (n, v, hw/4)
        attention = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (n, hw, hw/4)
        out = (g @ attention.transpose(1, 2)).view(n, self.value_channels, h, w)
        return x + self.gamma * self.o(out)


class GBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, upsample: bool):
        super().__init__()
        if out_channels > in_channels:
            raise ValueError("a BigGAN-deep generator block can only keep or drop channels")
        hidden = in_channels // CHANNEL_RATIO
        self.out_channels, self.upsample = out_channels, upsample
        self.bn1 = ConditionalBatchNorm2d(in_channels, cond_dim)
        self.conv1 = sn_conv(in_channels, hidden, 1)
        self.bn2 = ConditionalBatchNorm2d(hidden, cond_dim)
        self.conv2 = sn_conv(hidden, hidden, 3)
        self.bn3 = ConditionalBatchNorm2d(hidden, cond_dim)
        self.conv3 = sn_conv(hidden, hidden, 3)
        self.bn4 = ConditionalBatchNorm2d(hidden, cond_dim)
        self.conv4 = sn_conv(hidden, out_channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x, cond)))
        h = F.relu(self.bn2(h, cond))
        skip = x[:, : self.out_channels]  # channel drop (identity when the width is kept)
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        h = self.conv2(h)
        h = self.conv3(F.relu(self.bn3(h, cond)))
        h = self.conv4(F.relu(self.bn4(h, cond)))
        return h + skip


class DBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("a BigGAN-deep discriminator block can only keep or add channels")
        hidden = out_channels // CHANNEL_RATIO
        self.downsample = downsample
        self.conv1 = sn_conv(in_channels, hidden, 1)
        self.conv2 = sn_conv(hidden, hidden, 3)
        self.conv3 = sn_conv(hidden, hidden, 3)
        self.conv4 = sn_conv(hidden, out_channels, 1)
        # extra channels of the skip come from a learned 1x1 conv, concatenated to the input
        self.conv_sc = sn_conv(in_channels, out_channels - in_channels, 1) if out_channels > in_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(x))
        h = self.conv2(F.relu(h))
        h = self.conv3(F.relu(h))
        h = F.relu(h)
        if self.downsample:
            h = F.avg_pool2d(h, 2)
            x = F.avg_pool2d(x, 2)
        h = self.conv4(h)
        if self.conv_sc is not None:
            x = torch.cat([x, self.conv_sc(x)], dim=1)
        return h + x


class BigGANDeepGenerator(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        num_classes: int,
        image_shape: tuple[int, int, int],
        width: int = 512,
        embed_dim: int = 128,
        attention_resolution: int = 16,
    ):
        super().__init__()
        steps = _resolutions(image_shape, width, "biggan-deep")
        self.latent_dim, self.num_classes, self.image_shape = latent_dim, num_classes, tuple(image_shape)
        self.width = width
        cond_dim = latent_dim + embed_dim
        self.shared = nn.Embedding(num_classes, embed_dim)
        nn.init.orthogonal_(self.shared.weight)
        self.linear = sn_linear(cond_dim, 4 * 4 * width)
        self.blocks = nn.ModuleList()
        resolution = 4
        for _ in range(steps):
            self.blocks.append(GBlock(width, width, cond_dim, upsample=False))
            self.blocks.append(GBlock(width, width, cond_dim, upsample=True))
            resolution *= 2
            if resolution == attention_resolution:
                self.blocks.append(SelfAttention(width))
        self.out = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), sn_conv(width, image_shape[0], 3), nn.Tanh()
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([z, self.shared(y)], dim=1)
        h = self.linear(cond).view(z.shape[0], self.width, 4, 4)
        for block in self.blocks:
            h = block(h, cond) if isinstance(block, GBlock) else block(h)
        return self.out(h)


class BigGANDeepDiscriminator(nn.Module):
    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int],
        width: int = 512,
        attention_resolution: int = 16,
    ):
        super().__init__()
        steps = _resolutions(image_shape, width, "biggan-deep")
        self.input_conv = sn_conv(image_shape[0], width, 3)
        blocks = []
        resolution = image_shape[1]
        for _ in range(steps):
            blocks.append(DBlock(width, width, downsample=True))
            blocks.append(DBlock(width, width, downsample=False))
            resolution //= 2
            if resolution == attention_resolution:
                blocks.append(SelfAttention(width))
        self.blocks = nn.Sequential(*blocks)
        self.head = ProjectionHead(width, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(self.input_conv(x)))
        return self.head(h.sum(dim=(2, 3)), y)
