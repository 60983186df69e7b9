import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ml.segmentation.hpa import network
from ml.segmentation.hpa.convert import WeightFileError, check_layout, convert, read_official_weights
from tests.ml.segmentation.hpa.official_weights import assert_same_tensors, save_as_pytorch_zoo, small_zoo_model


def test_reads_the_tensors_of_a_pickled_module_without_its_package(tmp_path):
    path = tmp_path / "zoo.pth"
    model = save_as_pytorch_zoo(path, small_zoo_model)
    state_dict, facts = read_official_weights(path)
    assert_same_tensors(state_dict, model.state_dict())
    assert facts == {"data_parallel": False, "saved_in_training_mode": False}
    assert "pytorch_zoo" not in sys.modules


def test_strips_the_data_parallel_prefix(tmp_path):
    path = tmp_path / "wrapped.pth"
    model = save_as_pytorch_zoo(path, lambda classes: nn.DataParallel(small_zoo_model(classes)))
    state_dict, facts = read_official_weights(path)
    assert_same_tensors(state_dict, model.module.state_dict())
    assert facts["data_parallel"] is True


class RunsCode:
    """Unpickling this would create a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return os.mkdir, (str(self.folder),)


def test_refuses_any_other_global_without_running_it(tmp_path):
    path = tmp_path / "malicious.pth"
    witness = tmp_path / "was-run"

    def build(classes):
        model = small_zoo_model(classes)
        model.payload = RunsCode(witness)
        return model

    save_as_pytorch_zoo(path, build)
    with pytest.raises(WeightFileError, match=r"names posix\.mkdir, which is not part of the HPA DPN-U-Net"):
        read_official_weights(path)
    assert not witness.exists()


def test_refuses_a_pickled_object_that_is_not_a_module(tmp_path):
    path = tmp_path / "state_dict.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(WeightFileError, match="holds a dict, not a pickled DPN-U-Net module"):
        read_official_weights(path)


def test_refuses_damaged_and_missing_files(tmp_path):
    damaged = tmp_path / "dpn_unet_nuclei_v1.pth"
    damaged.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightFileError, match="could not be read as a pickled PyTorch module"):
        read_official_weights(damaged)
    with pytest.raises(WeightFileError, match="There is no weight file at"):
        read_official_weights(tmp_path / "absent.pth")


def test_layout_check_names_what_does_not_match(tmp_path):
    with torch.device("meta"):
        expected = network.DPNUnet().state_dict()
    state_dict = {key: torch.empty(tensor.shape, device="meta") for key, tensor in expected.items()}
    del state_dict["final.0.bias"]
    state_dict["final.0.weight"] = torch.empty(2, 64, 3, 3, device="meta")
    state_dict["extra.weight"] = torch.empty(1, device="meta")
    with pytest.raises(WeightFileError) as raised:
        check_layout(state_dict, source="x.pth")
    assert str(raised.value) == (
        "x.pth is not the HPA DPN-92 U-Net: 1 weights missing (such as final.0.bias); 1 unknown weights "
        "(such as extra.weight); 1 weights of another shape (such as final.0.weight: [2, 64, 3, 3], expected "
        "[3, 64, 3, 3]); pass dpn_unet_nuclei_v1.pth or dpn_unet_cell_3ch_v1.pth from Zenodo record 4665863."
    )


def test_kind_comes_from_the_file_name_or_must_be_given(tmp_path):
    source = tmp_path / "weights.pth"
    save_as_pytorch_zoo(source, small_zoo_model)
    with pytest.raises(WeightFileError, match="pass --kind nuclei or --kind cell"):
        convert(source, tmp_path / "out.pt")
