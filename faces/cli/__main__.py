"""`python -m faces.cli ...`: the same as the `dat` command."""

import sys

from faces.cli import main

sys.exit(main())
