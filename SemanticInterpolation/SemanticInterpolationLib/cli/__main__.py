"""``python -m SemanticInterpolationLib.cli ARGS`` = ``semantic-interpolation ARGS``."""

import sys

from .app import main

sys.exit(main())
