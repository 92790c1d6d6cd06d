#!/usr/bin/env bash
# Embeddings into pgvector columns: pgvector is built from the vendored
# source (test/vendor.sh, cached per PostgreSQL version) and installed into
# the server on PATH, then the pg_regress test embed_vector runs between
# setup and teardown against a private instance and the mock (real vector,
# halfvec and sparsevec columns, HNSW indexes, nearest-neighbour queries).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vendor.sh"
vendor_pgvector
bash "$PG_LLM_ROOT/test/regress.sh" setup embed_vector teardown
