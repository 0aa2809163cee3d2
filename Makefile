# Every target does its own set-up: a fresh Debian machine with Python 3.11 needs nothing else.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache
export PYTHONPATH := $(CURDIR)

.PHONY: setup test bench bench-quick run audit clean warm install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,sim]'
	touch $@

# numba's cache is warmed here so that no kernel is compiled on a first tick.
$(VENV)/.warmed: $(VENV)/.installed $(shell find bot4d ipc -name '*.py' 2>/dev/null)
	$(PY) -m bot4d.warmup
	touch $@

setup: $(VENV)/.warmed

warm: setup

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,sim,bench]'
	touch $@

bench: setup $(VENV)/.bench-installed
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: setup $(VENV)/.bench-installed
	$(PY) -m bench --quick $(BENCH_ARGS)

run: setup
	$(PY) -m bot4d.cli run-paper

$(VENV)/.audit-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[audit]'
	touch $@

audit: $(VENV)/.audit-installed
	$(PY) -m bot4d.audit

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache bench/results/*.json

# Install for systemd: a venv under $(PREFIX), units, sysusers and tmpfiles snippets.
# DESTDIR stages the tree (packaging); without it, users and directories are created at once.
PREFIX  ?= /opt/bot4d
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
install:
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/python -m pip install --quiet '.[sim]'
	$(DESTDIR)$(PREFIX)/bin/python -m bot4d.units --bindir $(PREFIX)/bin --out $(DESTDIR)$(UNITDIR)
	install -D -m 0644 systemd/bot4d.sysusers.conf $(DESTDIR)/usr/lib/sysusers.d/bot4d.conf
	install -D -m 0644 systemd/bot4d.tmpfiles.conf $(DESTDIR)/usr/lib/tmpfiles.d/bot4d.conf
	install -D -m 0640 systemd/persist.env.example $(DESTDIR)/etc/bot4d/persist.env.example
	if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then systemd-sysusers bot4d.conf 2>/dev/null || systemd-sysusers; fi
	if [ -z "$(DESTDIR)" ] && command -v systemd-tmpfiles >/dev/null; then systemd-tmpfiles --create /usr/lib/tmpfiles.d/bot4d.conf; fi
	@echo "installed under $(DESTDIR)$(PREFIX); enable with: systemctl enable --now bot4d"
