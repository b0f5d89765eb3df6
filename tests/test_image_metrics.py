"""Classifier-based image metrics (ppgen.evaluation.images): the digit classifier, Fréchet
distance, class coverage and KL on real and collapsed sample sets, Stacked MNIST modes, and
the classifier cache. Skips without the shared data folder (MNIST)."""

import math

import pytest
import torch

from ppgen.datasets import load_mnist
from ppgen.evaluation import images
from tests.common import shared_file


@pytest.fixture(scope="module")
def mnist():
    folder = shared_file("mnist.npz").parent
    x, y = load_mnist("train", data_dir=folder)
    xt, yt = load_mnist("test", data_dir=folder)
    return folder, x[:10000], y[:10000], xt[:3000], yt[:3000]


@pytest.fixture(scope="module")
def classifier(mnist):
    _, x, y, _, _ = mnist
    return images.train_digit_classifier(x, y, num_epochs=3, seed=0)


def test_classifier_learns_digits(mnist, classifier):
    _, _, _, xt, yt = mnist
    acc = float((classifier.predict(xt) == yt).double().mean())
    assert acc > 0.9


def test_real_digits_against_a_collapsed_sampler(mnist, classifier):
    _, _, _, xt, yt = mnist
    real = images.image_metrics(xt[:1500], classifier, xt[1500:])
    assert real.class_coverage == 10 and real.class_kl < 0.05
    assert int(real.class_counts.sum()) == 1500
    ones = xt[yt == 1]
    collapsed = images.image_metrics(ones, classifier, xt[1500:])
    assert collapsed.class_coverage == 1
    assert collapsed.class_kl > 0.8 * math.log(10)
    assert collapsed.frechet_distance > 10 * real.frechet_distance
    noise = images.image_metrics(torch.rand(500, 28, 28, generator=torch.Generator()
                                            .manual_seed(0)), classifier, xt[1500:])
    assert noise.frechet_distance > collapsed.frechet_distance > 0
    assert math.isnan(images.image_metrics(xt[:100], classifier).frechet_distance)


def test_stacked_mnist_modes(mnist, classifier):
    _, _, _, xt, yt = mnist
    stacked, modes = images.make_stacked_mnist(xt, yt, 26000, seed=0)
    assert stacked.shape == (26000, 3, 28, 28) and int(modes.max()) < 1000
    # the true modes: uniform over the 1,000 triples
    assert len(modes.unique()) == 1000
    m = images.stacked_mnist_metrics(stacked, classifier)
    assert m.modes >= 990 and m.mode_kl < 0.15  # classifier errors only spread the counts
    one_digit = stacked[:, :1].expand(-1, 3, -1, -1)  # three copies of the red channel
    collapsed = images.stacked_mnist_metrics(one_digit, classifier)
    assert collapsed.modes <= 10 and collapsed.mode_kl >= math.log(100) - 1e-9
    with pytest.raises(ValueError, match="Stacked MNIST images"):
        images.stacked_mnist_metrics(xt[:10], classifier)


def test_classifier_is_cached_and_a_corrupt_cache_is_replaced(mnist, tmp_path, monkeypatch):
    folder, x, y, _, _ = mnist
    calls = []
    train = images.train_digit_classifier

    def quick(images_, labels, **kwargs):  # the real trainer on a small slice
        calls.append(len(images_))
        return train(x[:500], y[:500], num_epochs=1)

    monkeypatch.setattr(images, "train_digit_classifier", quick)
    a = images.digit_classifier(data_dir=folder, cache_dir=tmp_path)
    assert calls == [50000]
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temporary file left behind
    b = images.digit_classifier(data_dir=folder, cache_dir=tmp_path)
    assert calls == [50000]  # loaded, not trained again
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    files[0].write_bytes(b"not a torch file")
    images.digit_classifier(data_dir=folder, cache_dir=tmp_path)
    assert calls == [50000, 50000]  # trained again, the file replaced
    assert len(list(tmp_path.iterdir())) == 1


def test_bad_input(classifier):
    with pytest.raises(ValueError, match="28x28 digit images"):
        images.image_metrics(torch.zeros(5, 8, 8), classifier)
    with pytest.raises(ValueError, match="finite"):
        images.image_metrics(torch.full((5, 28, 28), float("nan")), classifier)
    with pytest.raises(ValueError, match="labels"):
        images.train_digit_classifier(torch.zeros(4, 28, 28), torch.tensor([0, 1, 12, 3]))
    with pytest.raises(ValueError, match="labels"):
        images.make_stacked_mnist(torch.zeros(4, 28, 28), torch.zeros(3, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="digit classes"):
        images.make_stacked_mnist(torch.zeros(2, 28, 28), torch.tensor([3, 10]), 10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        images.image_metrics(torch.full((5, 28, 28), 255.0), classifier)
    with pytest.raises(TypeError, match="classifier"):
        images.image_metrics(torch.zeros(5, 28, 28), "mnist")
    with pytest.raises(ValueError, match="lr"):
        images.train_digit_classifier(torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.long),
                                      lr=0.0)
