# procfs: make setup | make test | make demo | make lint | make bench | make install | make uninstall
# | make image
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libfuse3-dev fuse3 pkg-config procps util-linux busybox-static stress-ng sysstat runc gcc python3-dev python3-psutil htop tmux
STAMP := $(VENV)/.installed

.PHONY: setup test unit integration lint demo bench clean install uninstall install-deps image

# make install: procfs in $(PREFIX)/lib/procfs (a virtual environment of its own), its commands
# in $(PREFIX)/bin, the runtimes' files where they read them (docs/install.md: where each goes,
# and how DESTDIR applies). make uninstall removes what the manifest lists.
PREFIX ?= /usr/local
DESTDIR ?=
MOUNTPOINT ?= /var/lib/procfs
# The interpreter of the installed environment: the system's, not one of a user's PATH.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
INSTALL_APT := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv
INSTALL_ARGS = --prefix "$(PREFIX)" --destdir "$(DESTDIR)" --mountpoint "$(MOUNTPOINT)" \
	$(if $(HOOKSDIR),--hooks-dir "$(HOOKSDIR)") $(if $(LXCCONFDIR),--lxc-conf-dir "$(LXCCONFDIR)") \
	$(if $(CRIOCONFDIR),--crio-conf-dir "$(CRIOCONFDIR)") $(if $(UNITDIR),--unit-dir "$(UNITDIR)") \
	$(if $(FORCE),--force)

# What building pyfuse3 and running the server need, from Debian when missing (no-op elsewhere).
install-deps:
	@command -v dpkg-query >/dev/null || exit 0; missing=""; for p in $(INSTALL_APT); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

install: install-deps
	$(PYTHON) contrib/install.py install --python "$(PYTHON)" $(INSTALL_ARGS)

uninstall:
	$(PYTHON) contrib/install.py uninstall $(INSTALL_ARGS)

# The DaemonSet's image, localhost/procfs:VERSION (docs/install.md); IMAGE_TOOL=docker for Docker.
IMAGE_TOOL ?= podman
image:
	contrib/kubernetes/build-image.sh $(IMAGE_TOOL)

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup
	$(PY) -m pytest -q tests/integration

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

demo: setup
	$(PY) -m tests.support.demo

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
