import numpy as np
import pytest
import torch
from torch import nn

from skconv import ConvFeatureTransformer
from skconv._fold import fold_batch_norms
from skconv.zoo import load_backbone


class _Net(nn.Module):
    """A feature net (``net(x, stages) -> list``) with a configurable wiring."""

    def __init__(self, wiring: str):
        super().__init__()
        self.wiring = wiring
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=wiring == "bias")
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)
        for bn in (self.bn, self.bn2):  # non-trivial statistics, as after training
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 2)
            bn.bias.data.uniform_(-1, 1)

    @property
    def stage_names(self):
        return ["final"]

    def forward(self, x, stages=("final",)):
        y = self.conv(x)
        if self.wiring == "skip":  # the conv output is read twice: must not be folded
            out = self.bn(y) + y
        elif self.wiring == "shared":  # one conv used twice
            out = self.bn2(self.conv2(self.conv2(y)))
        else:
            out = self.bn2(self.conv2(torch.relu(self.bn(y))))
        return [out]


def _max_rel_diff(a_maps, b_maps):
    return max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(a_maps, b_maps))


@pytest.mark.parametrize("wiring", ["plain", "bias"])
def test_folding_keeps_outputs_and_leaves_the_original_alone(wiring):
    torch.manual_seed(0)
    net = _Net(wiring).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    folded, n = fold_batch_norms(net, x)
    assert n == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert _max_rel_diff(net(x), folded(torch.clone(x))) < 1e-5
        assert _max_rel_diff(net(x + 1), folded(x + 1)) < 1e-5  # not only on the probe
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_a_conv_output_read_twice_is_detected_and_nothing_changes():
    torch.manual_seed(0)
    net = _Net("skip").eval()
    with pytest.warns(RuntimeWarning, match="unfolded network"):
        folded, n = fold_batch_norms(net, torch.randn(2, 3, 8, 8))
    assert folded is net and n == 0


def test_a_conv_run_twice_is_not_folded():
    torch.manual_seed(0)
    net = _Net("shared").eval()
    folded, n = fold_batch_norms(net, torch.randn(2, 3, 8, 8))
    assert n == 0 and folded is net


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(_Net("plain"), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize(
    "backbone, expected",
    [
        ("efficientnet_lite0", 49),  # every batch norm, through timm's BatchNormAct2d
        ("resnet18", 19),  # torchvision FX body; conv1 is a stage and keeps its bn
        ("mobilenet_v3_small", 34),
    ],
)
def test_zoo_backbones_fold_with_all_stages_unchanged(backbone, expected):
    weights = "DEFAULT" if backbone == "efficientnet_lite0" else None
    net = load_backbone(backbone, weights).module.eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    folded, n = fold_batch_norms(net, x, net.stage_names)
    assert n == expected
    probe = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _max_rel_diff(net(probe, net.stage_names), folded(probe, net.stage_names)) < 1e-4


def test_transformer_uses_a_folded_copy_and_keeps_module_as_loaded():
    images = np.random.default_rng(0).integers(0, 256, (5, 40, 48), dtype=np.uint8)
    t = ConvFeatureTransformer(weights=None, image_size=64).fit(images)
    out = t.transform(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in t._inference_module().modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in t.module_.modules())
    batch = torch.stack([t.preprocessing_(img) for img in _pil(images)])
    with torch.inference_mode():
        (fmap,) = t.module_(batch.contiguous(memory_format=torch.channels_last))
    np.testing.assert_allclose(out, fmap.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)


def _pil(images):
    from skconv.images import load_image

    return [load_image(img) for img in images]
