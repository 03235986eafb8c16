# Two commands do everything on a fresh machine:  `make quick`  and  `make test`.
VENV  := .venv
STAMP := $(VENV)/.layrot-installed
STORE ?= results/quick

.PHONY: setup quick test

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

# The main job: the quick sweep on real Fashion-MNIST, then its report.
quick: $(STAMP)
	$(VENV)/bin/layrot sweep sweeps/quick.yaml --store $(STORE) --resume
	$(VENV)/bin/layrot report --store $(STORE) -o $(STORE)/report.html

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
