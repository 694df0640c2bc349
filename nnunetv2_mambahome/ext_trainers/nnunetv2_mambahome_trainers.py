"""Entry point for nnU-Net's `nnUNet_extTrainer` lookup (export nnUNet_extTrainer=$(nnunetv2-mambahome trainer-path)).

nnU-Net imports every module of that directory and looks the trainer up by class name; the classes
themselves live in the installed package `nnunetv2_mambahome.training`.
"""
from nnunetv2_mambahome.training import *  # noqa: F401,F403
