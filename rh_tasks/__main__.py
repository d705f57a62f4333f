"""``python -m rh_tasks`` (and ``accelerate launch -m rh_tasks run ...``) is the ``rh-eval`` command."""

import sys

from rh_tasks.plugin.command import main

sys.exit(main())
