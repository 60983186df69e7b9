"""The one place that turns a device name into a `torch.device`."""

import torch

DEVICE_NAMES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" -> the GPU when CUDA is available, else the CPU; "cpu"; "cuda" or "cuda:N"."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"Device {name!r} was requested but this machine has no usable CUDA GPU; use 'cpu' or 'auto'."
            )
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"Unknown device {name!r}; write a GPU as 'cuda' or 'cuda:N'.") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"Device {name!r} does not exist; this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                "numbered from 0."
            )
        return device
    raise ValueError(f"Unknown device {name!r}; use one of {', '.join(DEVICE_NAMES)} (or 'cuda:N').")
