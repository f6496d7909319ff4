# voxcart: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: demo test bootstrap lint typecheck unit e2e up bench-speech

demo: bootstrap ## start the whole stack on embedded defaults and place a simulated call
	uv run voxcart demo

test: bootstrap lint typecheck ## everything CI runs (installs Debian's prometheus for the observability test)
	bash scripts/prometheus.sh
	uv run pytest -q

bootstrap:
	@bash scripts/bootstrap.sh

lint:
	uv run ruff check .
	uv run ruff format --check .

typecheck:
	uv run mypy

unit: bootstrap
	uv run pytest -q -m "not e2e"

e2e: bootstrap
	bash scripts/prometheus.sh
	uv run pytest -q -m e2e

up: bootstrap
	uv run voxcart up

bench-speech: bootstrap ## speech accuracy and speed (installs Debian's Asterisk prompts for the real-speech part)
	bash scripts/speech-data.sh
	uv run voxcart bench speech --json bench-speech.json
