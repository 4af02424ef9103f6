# Storywire. `make run` starts the service, `make test` runs the tests.
# Each target bootstraps .venv from requirements.txt (pinned) and pyproject.toml on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test eval eval-all tune stream bench feeds screenshot clean
.DEFAULT_GOAL := run

# The pinned requirements, then the project itself, editable and without dependencies (so
# scripts and tests import its packages); no build isolation, so nothing more is fetched: the
# setuptools Python 3.11's venv ships builds it, with the wheel pinned in requirements.txt.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

run: $(VENV)/.installed
	$(PY) scripts/run.py

# The tests run in TEST_PROCESSES processes (pytest-xdist), a test file to each in turn
# (its module fixtures' servers started once); one process (0) when STORYWIRE_TEST_REDIS_URL
# shares one server between them.
TEST_PROCESSES ?= $(if $(STORYWIRE_TEST_REDIS_URL),0,2)
# Chromium and docker-compose (Debian's) for the browser and compose-file tests, when root or
# password-less sudo can install them; without them those tests are skipped, saying how to get them.
test: $(VENV)/.installed
	@bash .ci/install-browser || echo "make test: no Chromium: the browser tests will be skipped"
	@bash .ci/install-compose || echo "make test: no docker-compose: the compose-file tests will be skipped"
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

# make eval [STREAM=path.jsonl] [OUT=pred.jsonl] [API=http://127.0.0.1:8000] [ARGS="--headlines-only ..."]
eval: $(VENV)/.installed
	$(PY) scripts/evaluate.py $(if $(STREAM),--stream $(STREAM)) $(if $(OUT),--out $(OUT)) $(if $(API),--api $(API)) $(ARGS)

# make eval-all [ARGS="--split held-out --out table.json"]: dev, dev at 30 words, dev headlines only, those two
# with stories three times longer, and feeds-dev (../shared/eval), scored in one run, printed as one Markdown table
eval-all: $(VENV)/.installed
	$(PY) scripts/eval_all.py $(ARGS)

# make tune [STREAM=labelled.jsonl] [OUT=results.json]: tune on half the stories, report on the rest
tune: $(VENV)/.installed
	$(PY) scripts/tune.py $(if $(STREAM),--stream $(STREAM)) $(if $(OUT),--out $(OUT))

# make stream COPIES=8 OUT=/tmp/dev-10k.jsonl: a longer labelled stream made from STREAM (default dev)
stream: $(VENV)/.installed
	$(PY) scripts/replicate_stream.py --copies $(or $(COPIES),8) --out $(or $(OUT),var/dev-x$(or $(COPIES),8).jsonl) $(if $(STREAM),--stream $(STREAM))

# make bench [BENCH_OUT=figures.json] [ARGS="--articles 20000 ..."]: speed against the targets, in one run
bench: $(VENV)/.installed
	$(PY) -m bench $(if $(BENCH_OUT),--out $(BENCH_OUT)) $(ARGS)

# make feeds FEEDS="https://example.com/rss.xml saved/atom.xml" [API=http://127.0.0.1:8000] [STATE=var/feeds-state.json] [ARGS="--allow-private-addresses"]
# Without API, the local service on API_PORT, as `API_PORT=8001 make run` started it (neither: import_feeds.py's default).
FEEDS_API = $(or $(API),$(if $(API_PORT),http://127.0.0.1:$(API_PORT)))
feeds: $(VENV)/.installed
	$(PY) scripts/import_feeds.py $(if $(FEEDS_API),--api $(FEEDS_API)) $(if $(STATE),--state $(STATE)) $(ARGS) $(FEEDS)

# make screenshot: docs/page.png, the README's picture of the page (needs bash .ci/install-browser)
screenshot: $(VENV)/.installed
	STORYWIRE_SCREENSHOT=docs/page.png STORYWIRE_REQUIRE_BROWSER=1 $(PY) -m pytest tests/service/test_page_browser.py -q -k listed

clean:
	rm -rf $(VENV) var .pytest_cache
