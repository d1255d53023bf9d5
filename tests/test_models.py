"""ResNet-20, BigGAN-deep and bring-your-own generators (tiny widths: CPU, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gafi_opt.errors import GafiError
from gafi_opt.models import build_classifier, build_discriminator, build_generator
from gafi_opt.models.biggan import BigGANDeepDiscriminator, BigGANDeepGenerator, DBlock, GBlock, SelfAttention
from gafi_opt.models.factory import build_from_factory, check_generator
from gafi_opt.models.resnet import BasicBlock, ShortcutA, resnet20
from gafi_opt.spec import ClassifierSpec, GeneratorSpec

TESTS = Path(__file__).parent


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot to them on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- resnet20


@pytest.mark.parametrize("channels,side", [(1, 8), (3, 8), (1, 32), (3, 32), (1, 28)])
def test_resnet20_shapes(channels, side):
    model = resnet20(channels, 10, width=8)
    out = model(torch.randn(2, channels, side, side))
    assert out.shape == (2, 10)
    model.eval()
    assert model(torch.randn(1, channels, side, side)).shape == (1, 10)


def test_resnet20_layout_default_width():
    model = resnet20(3, 10)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(blocks) == 9 and len(convs) + 1 == 20  # 19 convs + the linear layer
    assert [b.conv2.out_channels for b in blocks[::3]] == [64, 128, 256]
    assert [b.conv1.stride[0] for b in blocks] == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert model.head.in_features == 256
    # with option-A shortcuts every parameter sits in a conv, a BN or the head
    assert n_params(model) == 4_286_026


def test_option_a_shortcut_is_parameter_free():
    block = BasicBlock(8, 16, stride=2)
    assert isinstance(block.shortcut, ShortcutA)
    assert n_params(block.shortcut) == 0
    assert sum(b.numel() for b in block.shortcut.buffers()) == 0
    x = torch.randn(2, 8, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (2, 16, 4, 4)
    assert torch.equal(out[:, 4:12], x[:, :, ::2, ::2])  # input channels in the middle
    assert out[:, :4].abs().sum() == 0 and out[:, 12:].abs().sum() == 0
    model = resnet20(3, 10, width=4)
    assert all(n_params(m) == 0 for m in model.modules() if isinstance(m, ShortcutA))


def test_registry_builds_resnet20():
    model = build_classifier(ClassifierSpec(arch="resnet20", width=4), (3, 16, 16), 7)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)


# ---------------------------------------------------------------- biggan-deep

def tiny_pair(image_shape=(3, 32, 32)):
    g = BigGANDeepGenerator(16, 10, image_shape, width=16, embed_dim=16)
    d = BigGANDeepDiscriminator(10, image_shape, width=16)
    return g, d


@pytest.mark.parametrize("image_shape", [(3, 32, 32), (1, 16, 16), (1, 8, 8)])
def test_biggan_deep_shapes_and_range(image_shape):
    g, d = tiny_pair(image_shape)
    assert g.latent_dim == 16 and g.num_classes == 10
    z, y = torch.randn(4, 16), torch.tensor([0, 3, 9, 3])
    x = g(z, y)
    assert x.shape == (4, *image_shape)
    assert x.min() >= -1 and x.max() <= 1
    logits = d(x, y)
    assert logits.shape == (4,)
    (logits.mean() - d(torch.rand(4, *image_shape) * 2 - 1, y).mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in d.parameters() if p.grad is not None)
    g.eval()
    with torch.no_grad():
        x = g(z[:1], y[:1])
    assert x.shape == (1, *image_shape) and x.abs().max() <= 1
    check_generator(g, image_shape, 10)


def test_biggan_deep_layout():
    g, d = tiny_pair()
    gblocks = [m for m in g.blocks if isinstance(m, GBlock)]
    assert [b.upsample for b in gblocks] == [False, True] * 3  # 4 -> 8 -> 16 -> 32, two blocks each
    assert g.linear.in_features == 32 and g.linear.out_features == 4 * 4 * 16  # [z, embedding] -> 4x4
    assert all(b.conv1.out_channels == 4 for b in gblocks)  # bottleneck: channels / 4
    assert all(b.bn1.gain.in_features == 32 for b in gblocks)  # every CBN sees [z, embedding]
    dblocks = [m for m in d.blocks if isinstance(m, DBlock)]
    assert [b.downsample for b in dblocks] == [True, False] * 3  # 32 -> 16 -> 8 -> 4


def _attention_inputs(model, *inputs):
    sizes = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: sizes.append(tuple(args[0].shape[2:])))
        for m in model.modules()
        if isinstance(m, SelfAttention)
    ]
    model(*inputs)
    for hook in hooks:
        hook.remove()
    return sizes


def test_biggan_deep_self_attention_at_16x16():
    g, d = tiny_pair()
    y = torch.arange(2)
    assert _attention_inputs(g, torch.randn(2, 16), y) == [(16, 16)]
    assert _attention_inputs(d, torch.randn(2, 3, 32, 32), y) == [(16, 16)]
    g8, d8 = tiny_pair((1, 8, 8))  # no 16x16 stage, no attention
    assert not any(isinstance(m, SelfAttention) for m in [*g8.modules(), *d8.modules()])


def test_biggan_deep_spectral_norm_everywhere():
    g, d = tiny_pair()
    for model in (g, d):
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
        layers = [m for m in layers if not (model is g and m is g.shared)]  # G's shared embedding: no SN
        assert len(layers) > 20
        assert all(parametrize.is_parametrized(m, "weight") for m in layers)


def test_biggan_deep_state_dict_round_trip(tmp_path):
    g, d = tiny_pair()
    z, y = torch.randn(3, 16), torch.tensor([1, 2, 3])
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    g(z, y), d(x, y)  # a training step's worth of BN statistics and power iterations
    g.eval(), d.eval()
    with torch.no_grad():
        expected_g, expected_d = g(z, y), d(x, y)
    torch.save({"g": g.state_dict(), "d": d.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    torch.manual_seed(1)
    g2, d2 = tiny_pair()
    g2.load_state_dict(state["g"])
    d2.load_state_dict(state["d"])
    g2.eval(), d2.eval()
    with torch.no_grad():
        assert torch.equal(g2(z, y), expected_g)
        assert torch.equal(d2(x, y), expected_d)


def test_biggan_deep_blocks_change_channels():
    cond = torch.randn(2, 8)
    gblock = GBlock(16, 8, cond_dim=8, upsample=True)  # channel drop on the skip
    assert gblock(torch.randn(2, 16, 4, 4), cond).shape == (2, 8, 8, 8)
    dblock = DBlock(8, 16, downsample=True)  # skip: input + learned 1x1 channels
    assert dblock.conv_sc.out_channels == 8
    assert dblock(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)


@pytest.mark.parametrize("image_shape", [(3, 28, 28), (3, 32, 16), (3, 4, 4), (3, 24, 24)])
def test_biggan_deep_rejects_unsupported_sizes(image_shape):
    with pytest.raises(ValueError, match="power-of-two side >= 8"):
        BigGANDeepGenerator(16, 10, image_shape, width=16)
    with pytest.raises(ValueError, match="power-of-two side >= 8"):
        BigGANDeepDiscriminator(10, image_shape, width=16)


def test_biggan_deep_rejects_bad_width():
    with pytest.raises(ValueError, match="width"):
        BigGANDeepGenerator(16, 10, (3, 32, 32), width=10)


def test_registry_builds_biggan_deep():
    spec = GeneratorSpec(arch="biggan-deep", latent_dim=16, width=16, embed_dim=8)
    g = build_generator(spec, (3, 16, 16), 5)
    d = build_discriminator(spec, (3, 16, 16), 5)
    assert isinstance(g, BigGANDeepGenerator) and g.shared.embedding_dim == 8
    y = torch.arange(5)
    assert d(g(torch.randn(5, 16), y), y).shape == (5,)


# ---------------------------------------------------------------- bring your own generator


@pytest.fixture
def byo(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))

    def spec(**options):
        return GeneratorSpec(arch="byo_generator:make", latent_dim=8, options=options)

    return spec


def test_factory_builds_and_checks(byo):
    g = build_from_factory(byo(), (1, 8, 8), 4)
    assert type(g).__name__ == "TinyGenerator" and g.latent_dim == 8 and g.num_classes == 4
    g.train()
    check_generator(g, (1, 8, 8), 4)
    assert g.training  # mode restored
    g2 = build_generator(byo(), (1, 8, 8), 4)  # through the registry
    check_generator(g2, (1, 8, 8), 4)
    with pytest.raises(GafiError, match="no built-in discriminator"):
        build_discriminator(byo(), (1, 8, 8), 4)


def test_check_generator_leaves_global_rng_alone(byo):
    g = build_from_factory(byo(), (1, 8, 8), 4)
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    check_generator(g, (1, 8, 8), 4)
    assert torch.equal(torch.rand(3), before)


def test_check_generator_wrong_class_count(byo):
    g = build_from_factory(byo(claim_classes=3), (1, 8, 8), 4)
    with pytest.raises(GafiError, match="generator has 3 classes, data has 4"):
        check_generator(g, (1, 8, 8), 4)
    g = build_from_factory(byo(), (1, 8, 8), 4)
    with pytest.raises(GafiError, match="generator has 4 classes, data has 10"):
        check_generator(g, (1, 8, 8), 10)


def test_check_generator_wrong_shape(byo):
    g = build_from_factory(byo(out_side=16), (1, 8, 8), 4)
    with pytest.raises(GafiError, match=r"shape is \(4, 1, 16, 16\), expected \(4, 1, 8, 8\)"):
        check_generator(g, (1, 8, 8), 4)


def test_check_generator_out_of_range(byo):
    g = build_from_factory(byo(scale=5.0), (1, 8, 8), 4)
    with pytest.raises(GafiError, match=r"generator output range \[-\d.*, \d.*\] is outside \[-1, 1\]"):
        check_generator(g, (1, 8, 8), 4)
    g = build_from_factory(byo(scale=1.0005), (1, 8, 8), 4)  # within the tolerance
    check_generator(g, (1, 8, 8), 4)


def test_check_generator_non_finite_and_failing_forward(byo):
    g = build_from_factory(byo(scale=float("nan")), (1, 8, 8), 4)
    with pytest.raises(GafiError, match="NaN"):
        check_generator(g, (1, 8, 8), 4)
    g = build_from_factory(byo(fail=True), (1, 8, 8), 4)
    with pytest.raises(GafiError, match=r"^generator forward failed: RuntimeError: boom$"):
        check_generator(g, (1, 8, 8), 4)


def test_check_generator_missing_attributes():
    class NoAttrs(nn.Module):
        def forward(self, z, y):
            return z

    with pytest.raises(GafiError, match="int attribute 'latent_dim'"):
        check_generator(NoAttrs(), (1, 8, 8), 4)


def test_factory_errors(byo, tmp_path, monkeypatch):
    with pytest.raises(GafiError, match=r"cannot import generator factory 'no_such_pkg\.gen:make'.*No module named"):
        build_from_factory(GeneratorSpec(arch="no_such_pkg.gen:make"), (1, 8, 8), 4)
    with pytest.raises(GafiError, match=r"'byo_generator:nope'.*has no attribute 'nope'"):
        build_from_factory(GeneratorSpec(arch="byo_generator:nope"), (1, 8, 8), 4)
    with pytest.raises(GafiError, match="not callable"):
        build_from_factory(GeneratorSpec(arch="byo_generator:NOT_CALLABLE"), (1, 8, 8), 4)
    with pytest.raises(GafiError, match=r"'byo_generator:make' rejected its arguments.*bogus"):
        build_from_factory(byo(bogus=1), (1, 8, 8), 4)
    with pytest.raises(GafiError, match="package.module:function"):
        build_from_factory(GeneratorSpec(arch="byo_generator:"), (1, 8, 8), 4)
    broken = tmp_path / "broken_gen.py"
    broken.write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(GafiError, match="cannot import.*RuntimeError: half-written module"):
        build_from_factory(GeneratorSpec(arch="broken_gen:make"), (1, 8, 8), 4)
