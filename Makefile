# Every target does its own set-up: a fresh Debian machine with Python 3.11 needs nothing else.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache
export PYTHONPATH := $(CURDIR)

.PHONY: setup test bench bench-quick bench-list soak run audit clean warm install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,sim]'
	touch $@

# numba's cache is warmed here so that no kernel is compiled on a first tick (bot4d.warmup: one worker
# per core). `make run` warms only what the daemon, its sidecar and the simulator run; `setup` (and
# so `make test`) warms everything, the backtest too, and so stamps both.
# flock: two set-ups at once (two shells, parallel make targets) would compile the same kernels twice;
# the second waits, and skips the warm-up if the first finished it after the last edit.
KERNEL_SRC := $(shell find bot4d ipc -name '*.py' 2>/dev/null)
WARM = flock $(VENV)/.warm.lock sh -c 'if [ ! -f $@ ] || [ -n "$$(find bot4d ipc -name "*.py" -newer $@)" ]; then \
		touch $@.start && $(PY) -m bot4d.warmup $(1) && mv $@.start $@; fi'
# (the stamp is the warm-up's start: an edit made while it ran is warmed by the next set-up)

$(VENV)/.warmed: $(VENV)/.installed $(KERNEL_SRC)
	$(call WARM,)
	cp -p $@ $(VENV)/.warmed-daemon

$(VENV)/.warmed-daemon: $(VENV)/.installed $(KERNEL_SRC)
	$(call WARM,--only daemon)

setup: $(VENV)/.warmed

warm: setup

# both cores: tests are independent (own ports, temp dirs, instance names, PostgreSQL clusters)
PYTEST_JOBS ?= 2
test: setup
	$(PY) -m pytest -q -n $(PYTEST_JOBS) $(PYTEST_ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,sim,bench]'
	touch $@

bench: setup $(VENV)/.bench-installed
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: setup $(VENV)/.bench-installed
	$(PY) -m bench --quick $(BENCH_ARGS)

bench-list: setup $(VENV)/.bench-installed
	$(PY) -m bench --list

# The real daemon against the simulator for SOAK_MINUTES (default 10), sampled every 30 s after a
# one-minute warm-up; writes bench/results/soak-<ts>.json and fails on RSS growth (bench/soak.py).
SOAK_MINUTES ?= 10
soak: setup $(VENV)/.bench-installed
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

run: $(VENV)/.warmed-daemon
	$(PY) -m bot4d.cli run-paper

$(VENV)/.audit-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[audit]'
	touch $@

audit: $(VENV)/.audit-installed
	$(PY) -m bot4d.audit

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache bench/results/*.json

# Install for systemd: a venv under $(PREFIX), units, sysusers and tmpfiles snippets, and an example
# configuration. DESTDIR stages the tree (packaging); without it, users and directories are created
# at once. `install-files` is everything but the venv (what packaging and the tests stage).
PREFIX  ?= /opt/bot4d
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
CONFDIR := /etc/bot4d
.PHONY: install-venv install-files
install: install-venv install-files
	@echo "installed under $(DESTDIR)$(PREFIX); enable with: systemctl daemon-reload && systemctl enable --now bot4d bot4d-exporter"

install-venv:
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/python -m pip install --quiet '.[sim]'

# Units are rendered from the source tree (bot4d.units needs only the standard library). An
# operator's bot4d.toml is never overwritten; config/example.toml may not exist in every checkout.
install-files:
	$(PYTHON) -m bot4d.units --bindir $(PREFIX)/bin --out $(DESTDIR)$(UNITDIR)
	install -D -m 0644 systemd/bot4d.sysusers.conf $(DESTDIR)/usr/lib/sysusers.d/bot4d.conf
	install -D -m 0644 systemd/bot4d.tmpfiles.conf $(DESTDIR)/usr/lib/tmpfiles.d/bot4d.conf
	install -d -m 0755 $(DESTDIR)$(CONFDIR)
	install -m 0640 systemd/persist.env.example $(DESTDIR)$(CONFDIR)/persist.env.example
	install -m 0644 systemd/exporter.env.example $(DESTDIR)$(CONFDIR)/exporter.env.example
	if [ -f config/example.toml ] && [ ! -e $(DESTDIR)$(CONFDIR)/bot4d.toml ]; then \
		install -m 0644 config/example.toml $(DESTDIR)$(CONFDIR)/bot4d.toml; fi
	if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then systemd-sysusers /usr/lib/sysusers.d/bot4d.conf; fi
	if [ -z "$(DESTDIR)" ] && command -v systemd-tmpfiles >/dev/null; then systemd-tmpfiles --create /usr/lib/tmpfiles.d/bot4d.conf; fi
