"""`python -m devcloud ...` (what the `devcloud` wrapper in .venv/bin runs)."""

import sys

from devcloud.cli import main

sys.exit(main())
