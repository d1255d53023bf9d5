"""Training pieces: GAN resume, EMA, decoupled weight decay, the filter classifier, batch augmentation."""

import pytest
import torch
from conftest import DIGITS, tiny_overrides
from torch import nn

from gafi_opt.data import load_data
from gafi_opt.data.augment import cutout, random_crop, random_flip
from gafi_opt.models.checkpoints import checkpoint_paths, load_generator
from gafi_opt.spec import ClassifierSpec, load_spec
from gafi_opt.train.classifier import ClassifierTrainer
from gafi_opt.train.gan import ema_update, train_generator
from gafi_opt.train.real import load_filter, train_real_classifier


def spec_for(run_dir, *extra):
    return load_spec(DIGITS, tiny_overrides(run_dir) + list(extra))


@pytest.mark.parametrize("diffaug", [[], ["color", "translation", "cutout"]], ids=["plain", "diffaug"])
def test_generator_keeps_one_checkpoint_per_epoch_and_resumes_exactly(tmp_path, diffaug):
    extra = [f"generator.diffaug={diffaug}".replace("'", '"')]
    data = load_data(spec_for(tmp_path / "a").data)
    straight = spec_for(tmp_path / "a", "generator.epochs=3", *extra)
    train_generator(straight, data, torch.device("cpu"), seed=1, progress=False)
    assert sorted(checkpoint_paths(straight)) == [1, 2, 3]

    interrupted = spec_for(tmp_path / "b", "generator.epochs=2", "checkpoint.values=[1, 2]", *extra)
    train_generator(interrupted, data, torch.device("cpu"), seed=1, progress=False)
    first_two = {e: p.read_bytes() for e, p in checkpoint_paths(interrupted).items()}
    resumed = spec_for(tmp_path / "b", "generator.epochs=3", *extra)
    assert train_generator(resumed, data, torch.device("cpu"), seed=1, progress=False) == 3
    paths = checkpoint_paths(resumed)
    assert {e: paths[e].read_bytes() for e in (1, 2)} == first_two  # earlier epochs untouched

    a = load_generator(straight, checkpoint_paths(straight)[3], data.image_shape, data.num_classes)
    b = load_generator(resumed, paths[3], data.image_shape, data.num_classes)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name  # resuming gives the same weights as never stopping


def test_ema_update_formula():
    model, ema = nn.Linear(3, 2), nn.Linear(3, 2)
    before = ema.weight.detach().clone()
    ema_update(ema, model, decay=0.9)
    assert torch.allclose(ema.weight, 0.9 * before + 0.1 * model.weight.detach())
    ema_update(ema, model, decay=0.0)
    assert torch.equal(ema.weight, model.weight)


def test_decoupled_weight_decay_follows_its_formula():
    spec = ClassifierSpec(epochs=10, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.01, augment=(), batch_size=4, lr_milestones=(0.5,))
    trainer = ClassifierTrainer(spec, (1, 4, 4), 2, torch.device("cpu"), seed=0)
    images = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    # With lr_t / lr0 = 1 one plain SGD step must give p_new = (p - lr * grad) * (1 - wd).
    snapshot = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    reference = ClassifierTrainer(spec, (1, 4, 4), 2, torch.device("cpu"), seed=0)
    reference.model.load_state_dict(trainer.model.state_dict())
    loss = nn.functional.cross_entropy(reference.model(images.float().div(127.5).sub(1)), labels)
    grads = torch.autograd.grad(loss, list(reference.model.parameters()))
    trainer.train_epoch(images, labels)
    for (name, p), g in zip(trainer.model.named_parameters(), grads):
        expected = (snapshot[name] - 0.1 * g) * (1 - 0.01)
        assert torch.allclose(p.detach(), expected, atol=1e-6), name
    # After the milestone the decay shrinks with the learning rate: factor 1 - wd * 0.1.
    for _ in range(5):
        trainer.scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == 0.1 * 0.1


def test_scores_are_top1_accuracy_and_the_mean_probability_of_the_true_class():
    spec = ClassifierSpec(epochs=2, width=4, batch_size=8, augment=(), eval_batch_size=5)  # batches that do not divide the set
    trainer = ClassifierTrainer(spec, (1, 8, 8), 3, torch.device("cpu"), seed=1)
    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(12) % 3
    trainer.train_epoch(images, labels)
    trainer.model.eval()
    with torch.no_grad():
        probabilities = trainer.model(images.float().div(127.5).sub(1)).softmax(1)
    accuracy, soft = trainer.scores(images, labels)
    assert accuracy == pytest.approx(float((probabilities.argmax(1) == labels).float().mean())) == trainer.evaluate(images, labels)
    assert soft == pytest.approx(float(probabilities[torch.arange(12), labels].mean()), abs=1e-6)
    assert trainer.scores(images[:0], labels[:0]) == (0.0, 0.0)


def test_filter_classifier_is_saved_and_reloaded(tmp_path):
    spec = spec_for(tmp_path)
    data = load_data(spec.data)
    result = train_real_classifier(spec, data, torch.device("cpu"), progress=False)
    assert 0.0 <= result.test_acc <= 1.0 and 1 <= result.epoch <= spec.filter.epochs
    model = load_filter(spec, data.image_shape, data.num_classes, "cpu")
    from gafi_opt.train.classifier import accuracy

    assert float(accuracy(model, data.val_x, data.val_y)) == result.val_acc
    # A second call reuses the file instead of training again.
    assert train_real_classifier(spec, data, torch.device("cpu"), progress=False) == result


def test_batch_augmentations_keep_shapes_and_content():
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    flipped = random_flip(x)
    assert flipped.shape == x.shape
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(2)) for f, o in zip(flipped, x))
    cropped = random_crop(x, padding=2)
    assert cropped.shape == x.shape
    assert torch.equal(random_crop(x, padding=0), x)
    holes = cutout(torch.ones(16, 3, 8, 8), size=4)
    assert holes.shape == (16, 3, 8, 8)
    blanked = (holes == 0).all(1).sum((1, 2))
    assert (blanked <= 16).all() and (blanked >= 4).all()


def test_diffaugment_is_differentiable_and_random_per_image():
    from gafi_opt.data.augment import diff_augment

    torch.manual_seed(0)
    x = (torch.rand(16, 1, 8, 8) * 2 - 1).requires_grad_()
    y = diff_augment(x, ("color", "translation", "cutout"))
    assert y.shape == x.shape
    y.sum().backward()  # gradients reach the generator through every operation
    assert x.grad is not None and torch.isfinite(x.grad).all()
    x_same = torch.zeros(16, 1, 8, 8)
    out = diff_augment(x_same, ("color", "translation", "cutout"))
    assert len({tuple(image.flatten().tolist()) for image in out}) == 16  # equal inputs, 16 different draws
