"""The directory `nnUNet_extTrainer` points at (`nnunetv2-mambahome trainer-path`).

nnU-Net imports every module of this directory and looks trainers up by class name; this file only makes
the directory a package of the distribution (nnU-Net's lookup skips `__init__`).
"""
