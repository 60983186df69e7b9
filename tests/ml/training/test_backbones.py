import pytest
import timm
import torch

from ml.checkpoints import CheckpointError
from ml.classifier.network import BackboneCellClassifier, CellClassifier
from ml.training.backbones import build_model, four_channel_stem, imagenet_weights_path, load_pretrained


def test_four_channel_stem_gives_yellow_the_mean_and_keeps_a_uniform_fields_response():
    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    stem = four_channel_stem(weight)
    assert stem.shape == (8, 4, 3, 3)
    torch.testing.assert_close(stem[:, :3], 0.75 * weight)
    torch.testing.assert_close(stem[:, 3], 0.75 * weight.mean(dim=1))
    uniform_rgb, uniform_four = torch.ones(1, 3, 5, 5), torch.ones(1, 4, 5, 5)
    torch.testing.assert_close(
        torch.nn.functional.conv2d(uniform_four, stem), torch.nn.functional.conv2d(uniform_rgb, weight)
    )


def test_build_model_gives_compact_or_a_timm_backbone_and_refuses_unknown_names():
    assert isinstance(build_model("compact", dropout=0.1, widths=(8, 16)), CellClassifier)
    model = build_model("resnet18", dropout=0.1, widths=())
    assert isinstance(model, BackboneCellClassifier) and model.backbone.conv1.in_channels == 4
    with pytest.raises(ValueError, match=r"^There is no backbone called 'resnet-nineteen'; use compact or a timm"):
        build_model("resnet-nineteen", dropout=0.1, widths=())


def test_imagenet_efficientnet_lite0_comes_from_the_installed_package_with_a_four_channel_stem():
    model = build_model("efficientnet_lite0", dropout=0.2, widths=())
    loaded = load_pretrained(model, "imagenet")
    source = torch.load(imagenet_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert loaded["source"] == "imagenet" and loaded["stem"] == ["conv_stem.weight"]
    torch.testing.assert_close(model.backbone.conv_stem.weight, four_channel_stem(source["_conv_stem.weight"]))
    torch.testing.assert_close(model.backbone.blocks[0][0].conv_dw.weight, source["_blocks.0._depthwise_conv.weight"])
    torch.testing.assert_close(model.backbone.blocks[6][0].conv_pwl.weight, source["_blocks.15._project_conv.weight"])
    torch.testing.assert_close(model.backbone.bn2.running_var, source["_bn1.running_var"])


def test_a_timm_state_dict_file_loads_by_name_and_the_head_starts_fresh(tmp_path):
    rgb = timm.create_model("resnet18", num_classes=1000)
    torch.save({"state_dict": {f"module.{k}": v for k, v in rgb.state_dict().items()}}, tmp_path / "r18.pth")
    model = build_model("resnet18", dropout=0.2, widths=())
    load_pretrained(model, tmp_path / "r18.pth")
    torch.testing.assert_close(model.backbone.layer3[1].conv2.weight, rgb.layer3[1].conv2.weight)
    torch.testing.assert_close(model.backbone.conv1.weight, four_channel_stem(rgb.conv1.weight))


def test_weights_of_another_architecture_are_refused_with_a_sentence(tmp_path):
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"^r18.pth holds \d+ backbone tensors where the backbone has \d+; pass"):
        load_pretrained(build_model("efficientnet_lite0", dropout=0.2, widths=()), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"^No ImageNet weights for resnet18 are installed"):
        load_pretrained(build_model("resnet18", dropout=0.2, widths=()), "imagenet")
    with pytest.raises(CheckpointError, match=r"^Pretrained weights are for timm backbones"):
        load_pretrained(build_model("compact", dropout=0.2, widths=(8,)), "imagenet")
