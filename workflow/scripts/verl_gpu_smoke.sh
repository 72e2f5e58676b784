#!/usr/bin/env bash
# Check the verl path on your hardware in minutes, before a long run (one GPU):
#   bash workflow/scripts/verl_gpu_smoke.sh            # rule environments via conda (envs/*.yaml)
#   EMPO_SMOKE_CONDA=0 bash workflow/scripts/verl_gpu_smoke.sh   # in the active environment,
#                                                      # which then needs envs/verl.yaml's packages
# It builds the demo model, trains 2 EMPO steps with verl (FSDP + vLLM rollouts + our group
# reward), converts the last checkpoint with verl.model_merger and evaluates one benchmark,
# then checks what each stage left. Outputs: results/verl-smoke/ (config/verl-smoke.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "verl_gpu_smoke: no GPU visible (nvidia-smi failed); the verl path needs one" >&2
  exit 2
fi
configs=(config/demo.yaml config/verl-smoke.yaml)
results=results/verl-smoke
target="$results/eval/tiny-qwen2/empo/add_test/greedy/math-verify/metrics.json"
conda_flag=(--sdm conda)
if [[ "${EMPO_SMOKE_CONDA:-1}" == "0" ]]; then
  conda_flag=()
  python -c "import verl, vllm, pipelines" || {
    echo "verl_gpu_smoke: the active environment lacks verl/vllm/pipelines (see envs/verl.yaml)" >&2; exit 2; }
fi
start=$(date +%s)
# the target first: --configfile and --resources take every following word as theirs
snakemake "$target" --configfile "${configs[@]}" "${conda_flag[@]}" --cores "${CORES:-8}" --resources gpu=1
python - "$results" <<'PY'
import json, sys
from pathlib import Path
results = Path(sys.argv[1])
training = json.loads((results / "train/tiny-qwen2/empo/training.json").read_text())
assert training["saved_steps"] == [1, 2], training["saved_steps"]
model = json.loads((results / "models/tiny-qwen2/empo/model.json").read_text())
assert model["backend"] == "verl" and model["global_step"] == 2, model
metrics = json.loads((results / "eval/tiny-qwen2/empo/add_test/greedy/math-verify/metrics.json").read_text())
log = (results / "logs/train/tiny-qwen2/empo.log").read_text()
assert "group/semantic_entropy" in log, "the group-reward diagnostics never reached verl's logger"
print("verl smoke OK: steps", training["saved_steps"], "| converted step", model["global_step"],
      "| add_test", metrics["metrics"])
PY
echo "verl_gpu_smoke: passed in $(( $(date +%s) - start )) s; MLflow: mlflow ui --backend-store-uri sqlite:///$PWD/$results/mlflow/mlflow.db"
