"""`python -m pipelines.models`: the model stage (pipelines.models.stage.main)."""

import sys

from pipelines.models.stage import main

if __name__ == "__main__":
    sys.exit(main())
