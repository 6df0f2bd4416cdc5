# `make demo` and `make test` are the two commands a new user runs; both install what they need.
.PHONY: bootstrap demo demo-image lint test test-slow test-all test-tempest bench bench-server bench-storage bench-rbd bench-files clean config-example man completion

bootstrap:
	@./scripts/bootstrap

demo: bootstrap
	@./scripts/demo

# The block engine alone on a generated disk image (no cloud).
demo-image: bootstrap
	@./scripts/demo-image

# ruff and mypy, configured in pyproject.toml: under half a minute cold, a second or two with their caches.
lint: bootstrap
	@.venv/bin/ruff check src tests bench
	@.venv/bin/mypy

# Lint first, then the default suite against a fast-mode dev cloud (servers without VMs). Under CI (CI=true)
# the slower tiers run too: the slow tests on a fast cloud, everything that boots real QEMU guests, and
# OpenStack's own API tests (Tempest) against the dev cloud.
test: bootstrap lint
	@DEVCLOUD_FAST=1 .venv/bin/pytest -m "not slow and not guest" --durations=15 $(PYTEST_ARGS)
	@if [ "$${CI:-}" = "true" ]; then $(MAKE) --no-print-directory test-slow; fi

test-slow: bootstrap
	@DEVCLOUD_FAST=1 ./scripts/pytest-tier -m "slow and not guest" --durations=25 $(PYTEST_ARGS)
	@TEMPEST_STOP_CLOUD=1 ./scripts/tempest
	@./scripts/pytest-tier -m guest --durations=25 $(PYTEST_ARGS)

test-all: test test-slow

# OpenStack's API tests (Tempest, in its own venv) against a fast dev cloud of its own (test-slow runs them too).
test-tempest: bootstrap
	@./scripts/tempest $(TEMPEST_ARGS)

bench: bootstrap
	@.venv/bin/python bench/run.py $(BENCH_ARGS)

# A server's Incremental against the time to snapshot and download it once (target: at most 1.5x), on a fast dev cloud.
bench-server: bootstrap
	@.venv/bin/python bench/server.py $(BENCH_ARGS)

# Full/Incremental/Restore into a local Swift over S3 and the Swift API, a directory, restic on S3.
bench-storage: bootstrap
	@.venv/bin/python bench/objectstore.py $(BENCH_ARGS)

# Changed-block Incrementals of an RBD image against a full read and the floor, on a Ceph started alone.
bench-rbd: bootstrap
	@.venv/bin/python bench/rbd.py $(BENCH_ARGS)

# Listing /etc and extracting a 1 GiB file from a 10 GiB disk's backup, against a restore; reads of the mounted disk.
# libguestfs's appliance without KVM unless LIBGUESTFS_BACKEND_SETTINGS says otherwise (nested KVM can hang).
bench-files: bootstrap
	@LIBGUESTFS_BACKEND_SETTINGS=$${LIBGUESTFS_BACKEND_SETTINGS-force_tcg} .venv/bin/python bench/file_restore.py \
		--dir $${BENCH_DIR:-/var/tmp/stackvault-bench-files} $(BENCH_ARGS)

clean:
	rm -rf .venv demo-out bench/out .pytest_cache .mypy_cache .ruff_cache

# Files generated from the code and checked in; tests/unit/test_generated_files.py fails when one is stale.
config-example: bootstrap
	@.venv/bin/python -m stackvault.config_example > docs/stackvault.example.toml

# The man page and the bash and zsh completions, from the argument parser, into packaging/.
man completion: bootstrap
	@.venv/bin/python scripts/cli-files
