#!/usr/bin/env python3
"""Upsample the bundled real brain MRI and write a PNG of through-plane views before and after.

Same as ``semantic-interpolation demo``; run from a source checkout after ``pip install -e .[eval]``::

    python Resources/Scripts/demo.py --output demo [--checkpoint MODEL.pt] [--factor 5]
"""

import sys
from pathlib import Path

try:
    from SemanticInterpolationLib.cli.demo import main
except ImportError:  # not installed: use the checkout's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SemanticInterpolation"))
    from SemanticInterpolationLib.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
