"""sampling_mlp: sampling-based approximate matrix multiplication for MLP training."""

__version__ = "0.1.0"
