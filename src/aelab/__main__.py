"""``python -m aelab`` (and ``torchrun -m aelab``) runs the command line."""
import sys

from .cli import main

sys.exit(main())
