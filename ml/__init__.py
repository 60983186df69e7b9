"""hpaweb's machine-learning library: plain Python and PyTorch, usable without Django."""
