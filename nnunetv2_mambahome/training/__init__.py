"""nnU-Net trainer classes; found by nnU-Net through the directory `nnunetv2-mambahome trainer-path` prints."""
from .peer_trainers import *  # noqa: F401,F403
from .peer_trainers import __all__ as _peer_all
from .trainers import *  # noqa: F401,F403
from .trainers import __all__ as _home_all

__all__ = [*_home_all, *_peer_all]
