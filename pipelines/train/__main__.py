"""`python -m pipelines.train`: train one (model, method) with the configured backend."""

import sys

from pipelines.train.trl_backend import main

if __name__ == "__main__":
    sys.exit(main())
