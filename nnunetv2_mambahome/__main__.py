"""`python -m nnunetv2_mambahome ...`: the same as the `nnunetv2-mambahome` console command."""
import sys

from .cli import main

sys.exit(main())
