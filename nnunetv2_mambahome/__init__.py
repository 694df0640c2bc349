"""nnU-Net v2 plugin for Mamba-HoME: networks, trainers, tools."""

__version__ = "0.1.0"
