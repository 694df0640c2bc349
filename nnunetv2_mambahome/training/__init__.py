"""nnU-Net trainer classes; found by nnU-Net through the directory `nnunetv2-mambahome trainer-path` prints."""
from . import paper_trainers, peer_trainers, trainers
from .paper_trainers import *  # noqa: F401,F403
from .peer_trainers import *  # noqa: F401,F403
from .trainers import *  # noqa: F401,F403

__all__ = [*trainers.__all__, *paper_trainers.__all__, *peer_trainers.__all__]
