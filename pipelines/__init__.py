"""Label-free RL reasoning pipeline (EMPO and sister methods): the code every Snakemake rule calls.

One module per stage (`data`, `models`, `evaluate`, `report`) plus shared cores
(`config`, `grading`, `tracking`). Rules stay thin and call `python -m pipelines.<stage>`.
"""

__version__ = "0.1.0"
