#!/bin/sh
# One-shot instance setup, run before the webserver and daemon start (compose: the
# `dagster-init` service; ECS: a one-off task or the daemon's entry command). Idempotent.
#  1. create or upgrade the Dagster tables in Postgres;
#  2. set the per-pool limits, which live in the instance database, not in dagster.yaml
#     (dagster.yaml only holds `concurrency.pools.default_limit`).
set -eu

dagster instance migrate
dagster instance concurrency set gpu "${ACS_GPU_POOL_LIMIT:-1}"
