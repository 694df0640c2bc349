"""Kernels and their pure-PyTorch references, kept apart from the nn.Modules that use them."""
from .backends import ENV_VAR, ScanBackendError, explain_auto_choice, requested_backend, resolve_backend
from .mamba_inner import causal_depthwise_conv1d, mamba_inner
from .selective_scan_chunked import selective_scan_chunked
from .selective_scan_ref import selective_scan_ref

__all__ = [
    "ENV_VAR", "ScanBackendError", "causal_depthwise_conv1d", "explain_auto_choice", "mamba_inner",
    "requested_backend", "resolve_backend", "selective_scan_chunked", "selective_scan_ref",
]
