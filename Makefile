# Two commands do everything on a fresh machine:  `make quick`  and  `make test`.
VENV  := .venv
STAMP := $(VENV)/.layrot-installed
STORE ?= results/quick
STUDY ?= results/study
# The study is judged at its pre-registered threshold; 30-epoch runs rarely reach it, so
# docs/reproduction.md repeats the correlations at 0.95, labelled as chosen after the runs.
STUDY_EXPLORATORY ?= 0.95

.PHONY: setup quick test study

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

# The reproduction study (docs/reproduction.md): five sweep specs on real Fashion-MNIST, about an
# hour on a 2-core CPU; --resume makes an interrupted study continue where it stopped.
study: $(STAMP)
	for spec in rho alpha sgd adaptive adaptive-seed1; do \
		$(VENV)/bin/layrot sweep sweeps/study-$$spec.yaml --store $(STUDY) --resume || exit 1; \
	done
	$(VENV)/bin/layrot report --store $(STUDY) -o $(STUDY)/report.html
	$(VENV)/bin/python -m analysis.reproduction $(STUDY) --exploratory $(STUDY_EXPLORATORY) --write docs/reproduction.md
