"""python -m engine: the bulwark-engine command line."""

import sys

from engine.cli import main

sys.exit(main())
