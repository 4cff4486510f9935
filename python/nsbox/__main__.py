"""``python -m nsbox``: the ``nsbox`` command (see :mod:`nsbox._cli`)."""

import sys

from nsbox._cli import main

if __name__ == "__main__":
    sys.exit(main())
