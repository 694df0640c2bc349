"""nnU-Net trainer classes; found by nnU-Net through the directory `nnunetv2-mambahome trainer-path` prints."""
from .trainers import *  # noqa: F401,F403
from .trainers import __all__  # noqa: F401
