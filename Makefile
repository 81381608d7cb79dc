# The two commands of the README. Both set up .venv first (idempotent).
DATA_DIR ?= s2f-data

.PHONY: demo test setup lint

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/s2f demo --data-dir $(DATA_DIR)

lint: setup
	.venv/bin/ruff check .

test: setup lint
	.venv/bin/python -m pytest -q
