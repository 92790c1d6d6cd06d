# pg_llm: an LLM gateway inside PostgreSQL

EXTENSION = pg_llm
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" pg_llm.control)
MODULE_big = pg_llm
OBJS = src/pg_llm.o src/config.o src/runas.o src/http.o src/call.o src/chat.o src/many.o \
	src/stream.o src/sse.o src/json.o src/request.o src/provider.o \
	src/provider_openai.o src/provider_anthropic.o \
	src/utf8.o src/shmem.o src/queue.o src/worker.o src/lease.o src/writeback.o \
	src/usage.o src/target.o src/ratelimit.o src/batch.o src/batch_json.o
PGFILEDESC = "pg_llm - LLM gateway inside PostgreSQL"

# The install script is built from its parts (sql/install/), one concern
# a file, in this order, into sql/versions/ beside the released versions;
# the upgrade scripts are built from sql/upgrade/ (see below).  The top of
# sql/ holds the pg_regress scripts only.
SQL_PARTS = sql/install/config.sql sql/install/calls.sql sql/install/queue.sql \
	sql/install/batch.sql sql/install/usage.sql sql/install/jobs.sql sql/install/grants.sql
DATA_built = sql/versions/$(EXTENSION)--$(EXTVERSION).sql sql/versions/$(EXTENSION)--0.1.0--0.2.0.sql
DATA = sql/versions/$(EXTENSION)--0.1.0.sql

# pg_regress scripts, one topic per file (the top of sql/); they need the
# local mock provider: test/regress.sh starts it, and so does
# "make installcheck" (test/installcheck.sh) when MOCK_PORT is not set
REGRESS = setup offline chat anthropic faults stream many traffic queue batch usage jobs security hostile teardown
REGRESS_OPTS = --inputdir=.

PG_CPPFLAGS = -Isrc -DPG_LLM_VERSION=\"$(EXTVERSION)\" \
	$(shell pkg-config --cflags libcurl json-c 2>/dev/null) \
	-Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers
SHLIB_LINK = $(shell pkg-config --libs libcurl json-c 2>/dev/null || echo -lcurl -ljson-c)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/versions/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $^ > $@

# An upgrade script: its own changes to the tables and the parts that are
# new in the version, then every function and view of the new version
# defined again from the parts, then what needs them, then the grants.
sql/versions/$(EXTENSION)--0.1.0--0.2.0.sql: sql/upgrade/0.1.0--0.2.0-before.sql $(SQL_PARTS) \
		sql/upgrade/definitions.awk sql/upgrade/0.1.0--0.2.0-after.sql
	{ cat sql/upgrade/0.1.0--0.2.0-before.sql sql/install/batch.sql; \
	  awk -f sql/upgrade/definitions.awk $(SQL_PARTS); \
	  cat sql/upgrade/0.1.0--0.2.0-after.sql sql/install/grants.sql; } > $@

# every object is rebuilt when a header changes (structs are shared)
$(OBJS): $(wildcard src/*.h)
