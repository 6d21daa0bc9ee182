"""``python -m geo_operator.cli``: the `geo` command (the e2e tests start the operator so)."""

import sys

from geo_operator.cli import main

sys.exit(main())
