import pytest
import torch

from ml.device import resolve_device


def test_resolve_device_gives_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_auto_picks_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_resolve_device_refuses_cuda_without_a_gpu():
    with pytest.raises(ValueError, match="no usable CUDA GPU; use 'cpu' or 'auto'"):
        resolve_device("cuda")


def test_resolve_device_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
