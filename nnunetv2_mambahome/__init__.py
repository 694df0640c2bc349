"""nnU-Net v2 plugin for Mamba-HoME: networks, trainers, tools.

Importing the package is cheap (no torch, no nnU-Net). `register()` makes nnU-Net find our trainers from
Python (notebooks, the predictor API), as `eval "$(nnunetv2-mambahome trainer-path --export)"` does in a shell.
"""
from .trainer_path import register

__version__ = "0.1.0"
__all__ = ["__version__", "register"]
