"""``python -m plugformer`` (and ``torchrun -m plugformer``) run the CLI."""
import sys

from plugformer.cli.main import main

sys.exit(main())
