"""The old name of ``python -m benchmarks scale``, still used in docs."""

import sys

from benchmarks.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["scale", *sys.argv[1:]]))
