#!/usr/bin/env bash
# Run by "make installcheck" before pg_regress: refuses to start where the
# suite could not run or could touch what is not its own.
#   On an instance of pg_regress's own (REGRESS_INSTANCE set, the default):
#   initdb refuses root, so say so at once (test/regress.sh runs the suite
#   as root, on an instance it starts as the postgres user).
#   On an existing instance (REGRESS_INSTANCE=, PGHOST/PGPORT): the suite
#   creates and drops roles and databases named regress_llm_*; if the
#   instance has one already, nothing runs.
set -euo pipefail
prefix=regress_llm_
if [ -n "${REGRESS_INSTANCE:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "make installcheck: initdb cannot be run as root; run it as another user, or run bash test/regress.sh" >&2
    exit 1
  fi
  exit 0
fi
taken=$(psql -X -A -t -q -d postgres -v ON_ERROR_STOP=1 -c "
  SELECT pg_catalog.string_agg(what || ' ' || pg_catalog.quote_ident(name), ', ' ORDER BY what, name)
  FROM (SELECT 'role' AS what, rolname::text AS name FROM pg_catalog.pg_roles
        UNION ALL
        SELECT 'database', datname::text FROM pg_catalog.pg_database) o
  WHERE name LIKE '${prefix//_/\\_}%'")
if [ -n "$taken" ]; then
  echo "make installcheck: refusing to run: $taken already exist(s); the suite creates and drops roles and databases named ${prefix}*" >&2
  exit 1
fi
