"""`python -m pipelines.generate`: the generate stage (pipelines.generate.run.main)."""

import sys

from pipelines.generate.run import main

if __name__ == "__main__":
    sys.exit(main())
