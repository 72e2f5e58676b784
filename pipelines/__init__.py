"""Label-free RL reasoning pipeline (EMPO and sister methods): the code every Snakemake rule calls.

One module per stage (`data`, `models`, `train`, `convert`, `generate`, `grade`, `report`, `curves`,
`plan`) plus shared cores (`config`, `grading`, `empo_rules`, `free_form`, `judge`, `rewards`,
`metrics`, `tracking`, `tracking_service`, `provenance`, `synthetic`). Rules stay thin and call
`python -m pipelines.<stage>`.
"""

__version__ = "0.1.0"
