"""``python -m nsbox``: the ``nsbox`` command (see :mod:`nsbox.cli`)."""

import sys

from nsbox.cli import main

if __name__ == "__main__":
    sys.exit(main())
