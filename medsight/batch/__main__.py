"""`python -m medsight.batch FOLDER ...`: see medsight.batch.cli."""

import sys

from medsight.batch.cli import main

sys.exit(main())
