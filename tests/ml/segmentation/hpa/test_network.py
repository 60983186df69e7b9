import json

import pytest
import torch
from torch import nn

from ml.segmentation.hpa.network import DPNUnet
from tests.ml.segmentation.support import SHARED_DIR

# Keys and shapes of the official HPA weights, dumped from pytorch_zoo's DPNUnet (see README.txt there).
LAYOUT_FILE = SHARED_DIR / "hpacellseg" / "dpnunet_state_dict_keys.json"
# DPN-92's topology at a fraction of its widths, fast enough to run on the CPU in tests.
TINY = {
    "stem_channels": 8,
    "blocks": (2, 1, 2, 1),
    "residual_channels": (16, 16, 24, 24),
    "bottleneck_channels": (8, 8, 8, 8),
    "dense_increments": (4, 4, 4, 4),
    "groups": 4,
}


@pytest.fixture(scope="module")
def dpn92() -> DPNUnet:
    """The full network without memory: parameters on the meta device."""
    with torch.device("meta"):
        return DPNUnet()


@pytest.fixture(scope="module")
def published_layouts() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    if not LAYOUT_FILE.is_file():
        pytest.skip(f"HPA weight layout not found at {LAYOUT_FILE} (shared reference data is not checked out)")
    dump = json.loads(LAYOUT_FILE.read_text())
    return {
        name: [(key, tuple(shape)) for key, shape in model["state_dict"]]
        for name, model in dump.items()
        if name != "_meta"
    }


def test_state_dict_has_the_keys_and_shapes_of_both_published_models(dpn92, published_layouts):
    ours = {key: tuple(tensor.shape) for key, tensor in dpn92.state_dict().items()}
    assert set(published_layouts) == {
        "nuclei_model (dpn_unet_nuclei_v1.pth)",
        "cell_model_3ch (dpn_unet_cell_3ch_v1.pth)",
    }
    for layout in published_layouts.values():
        assert len(layout) == 595
        assert ours == dict(layout)


def test_state_dict_order_follows_the_published_weights(dpn92, published_layouts):
    layout = next(iter(published_layouts.values()))
    assert list(dpn92.state_dict()) == [key for key, _ in layout]


def test_parameter_count_is_that_of_the_hpa_network(dpn92):
    assert sum(parameter.numel() for parameter in dpn92.parameters()) == 139_108_867


def test_every_batch_norm_uses_eps_1e_3(dpn92):
    batch_norms = [module for module in dpn92.modules() if isinstance(module, nn.BatchNorm2d)]
    assert len(batch_norms) == 96
    assert {module.eps for module in batch_norms} == {1e-3}


@pytest.mark.parametrize("height, width", [(64, 64), (64, 96)])
def test_forward_gives_three_logits_at_input_resolution(height, width):
    torch.manual_seed(0)
    model = DPNUnet(**TINY).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, height, width))
    assert logits.shape == (2, 3, height, width)
    assert torch.isfinite(logits).all()


def test_forward_depends_on_every_input_channel():
    torch.manual_seed(0)
    model = DPNUnet(**TINY).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        reference = model(image)
        for channel in range(3):
            changed = image.clone()
            changed[:, channel] += 1
            assert not torch.allclose(model(changed), reference)


def test_tiny_widths_keep_the_module_names():
    full = {key.rsplit(".", 1)[0] for key in DPNUnet(**{**TINY, "blocks": (3, 4, 20, 3)}).state_dict()}
    with torch.device("meta"):
        assert full == {key.rsplit(".", 1)[0] for key in DPNUnet().state_dict()}


def test_rejects_stage_settings_of_the_wrong_length():
    with pytest.raises(ValueError, match="need 4 values each"):
        DPNUnet(blocks=(3, 4, 20))


@pytest.mark.slow
def test_full_network_forward_on_the_cpu():
    torch.manual_seed(0)
    model = DPNUnet().eval()
    with torch.inference_mode():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 3, 64, 64)
    assert torch.isfinite(logits).all()
