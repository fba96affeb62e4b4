"""`python -m postmortem report RUN`."""
import sys

from .cli import main

sys.exit(main())
