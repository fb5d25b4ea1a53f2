"""``python -m prunus``: the same command line as the ``prunus`` script."""
import sys

from prunus.cli import main

if __name__ == '__main__':
    sys.exit(main())
