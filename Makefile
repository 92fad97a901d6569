# The two README commands: `make demo` and `make test`. Both install what they need on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_STAMP := infra/kafka/target/.fetched

.PHONY: install demo test test-unit broker-start broker-stop clean

install: $(STAMP) $(KAFKA_STAMP)

$(STAMP): pyproject.toml
	@echo "==> [1/2] Python environment in $(VENV) (first time: ~1-2 min; chdb is ~900 MB)"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check -q --upgrade pip
	@$(BIN)/pip install --disable-pip-version-check -e ".[test]" > $(VENV)/pip.log 2>&1 || (tail -n 20 $(VENV)/pip.log; echo "error: pip install failed (full log: $(VENV)/pip.log)"; exit 1)
	@$(BIN)/python -c "import faust, aiokafka, chdb, openai, anthropic, clickhouse_connect" || (echo "error: Python install failed; rerun 'make install' and read pip's output" && exit 1)
	@touch $@

$(KAFKA_STAMP): infra/kafka/pom.xml
	@echo "==> [2/2] Apache Kafka jars from Maven into infra/kafka/target/lib (first time: ~30 s)"
	@command -v java >/dev/null || (echo "error: java not found; install a Java 17+ runtime" && exit 1)
	@mvn -q -B -f infra/kafka/pom.xml package
	@touch $@

demo: install
	$(BIN)/modelyard demo

test: install
	$(BIN)/pytest -q

test-unit: install
	$(BIN)/pytest -q tests/unit

broker-start: install
	$(BIN)/modelyard broker start

broker-stop:
	$(BIN)/modelyard broker stop

clean:
	rm -rf $(VENV) infra/kafka/target .modelyard
