from __future__ import annotations

import pytest
import torch
from torch import nn

from linkstyle.classifiers import Classifier, last_linear


class VGGish(nn.Module):
    """Two Linear layers in the head, like VGG/AlexNet: children()[:-1] would be wrong here."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(12, 3))

    def forward(self, x):
        return self.classifier(self.features(x))


def _wrap(net, **kw):
    return Classifier(net, name="t", input_size=kw.get("input_size"), mean=(0.5,) * 3, std=(0.5,) * 3)


def test_features_are_the_input_of_the_last_linear_and_head_gives_the_logits():
    torch.manual_seed(0)
    clf = _wrap(VGGish())
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    r, logits = clf.features_and_logits(x)
    assert r.shape == (5, 12) and clf.num_units == 12 and clf.num_classes == 3
    assert (r >= 0).all()  # after the ReLU, as the penultimate layer should be
    torch.testing.assert_close(clf.head(r), logits)
    torch.testing.assert_close(clf(x), logits)
    torch.testing.assert_close(clf.features(x), r)


def test_preprocessing_resizes_on_the_tensor():
    clf = _wrap(VGGish(), input_size=8)
    x = torch.zeros(2, 3, 32, 32)
    assert clf.preprocess(x).shape == (2, 3, 8, 8)
    torch.testing.assert_close(clf.preprocess(x), torch.zeros(2, 3, 8, 8))


def test_network_without_linear_is_a_clear_error():
    with pytest.raises(ValueError, match="no nn.Linear"):
        last_linear(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_resnet18_features_are_512_wide():
    from linkstyle.classifiers.demo import build_demo_net

    clf = _wrap(build_demo_net("resnet18", 5, 32))
    with torch.no_grad():
        r, logits = clf.features_and_logits(torch.zeros(2, 3, 32, 32))
    assert r.shape == (2, 512) and logits.shape == (2, 5)
