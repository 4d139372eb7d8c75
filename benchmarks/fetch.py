"""The old name of ``python -m benchmarks fetch``, still used in docs."""

import sys

from benchmarks.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["fetch", *sys.argv[1:]]))
