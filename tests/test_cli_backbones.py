"""``skconv backbones``: the model zoo as a table."""

from skconv.cli import main


def test_backbones_lists_packaged_ones_with_feature_sizes(capsys):
    assert main(["backbones", "*_lite0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "source", "features", "input", "offline"]
    assert out[1].split() == ["efficientnet_lite0", "packaged", "1280", "224", "yes"]
    assert main(["backbones", "squeezenet*"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet1_1_caffe  packaged     512       224    yes" in out
    assert "squeezenet1_0        torchvision  -" in out
