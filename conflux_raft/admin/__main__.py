"""`python -m conflux_raft.admin`: the `conflux` command."""

import sys

from ._cli import main

sys.exit(main())
