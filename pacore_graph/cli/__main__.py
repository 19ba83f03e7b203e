"""``python -m pacore_graph.cli``: the ``pacore`` command."""

import sys

from pacore_graph.cli import main

sys.exit(main())
