# pg_llm: an LLM gateway inside PostgreSQL

EXTENSION = pg_llm
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" pg_llm.control)
MODULE_big = pg_llm
# every C file of src/ and src/worker/ is part of the module
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c src/worker/*.c)))
PGFILEDESC = "pg_llm - LLM gateway inside PostgreSQL"

# The install script is built from its parts (sql/install/), one concern
# a file, in this order, into sql/versions/ beside the released versions;
# the upgrade scripts are built from sql/upgrade/ (see below).  The top of
# sql/ holds the pg_regress scripts only.
SQL_PARTS = sql/install/config.sql sql/install/calls.sql sql/install/queue.sql \
	sql/install/batch.sql sql/install/usage.sql sql/install/jobs.sql sql/install/embed.sql \
	sql/install/estimate.sql sql/install/cache.sql \
	sql/install/citus.sql sql/install/grants.sql
DATA_built = sql/versions/$(EXTENSION)--$(EXTVERSION).sql sql/versions/$(EXTENSION)--0.2.0--$(EXTVERSION).sql
# released versions and the upgrade scripts between them, frozen as shipped
DATA = sql/versions/$(EXTENSION)--0.1.0.sql sql/versions/$(EXTENSION)--0.2.0.sql \
	sql/versions/$(EXTENSION)--0.1.0--0.2.0.sql

# pg_regress scripts, one topic per file (the top of sql/).  "make
# installcheck" is self-contained, as pg_cron's: pg_regress starts an
# instance of its own in tmp_check/ (run it as a user initdb accepts, not
# root) with test/regress.conf, which preloads pg_llm with a worker for
# the test database, and sql/setup.sql starts the local mock provider
# when MOCK_PORT is not set (test/regress_mock.sh; the last test stops
# it).  test/regress.sh runs the same suite on an instance it starts
# itself, with REGRESS_INSTANCE= (and so can a caller pointing PGHOST and
# PGPORT at an instance set up like test/regress.conf).  The suite's roles
# and databases are named regress_llm_*: test/regress_guard.sh refuses to
# start on an instance that has one.
REGRESS = setup offline chat anthropic shape faults stream many traffic transport queue batch shape_queue usage protocol embed jobs estimate cache money limits security hostile report teardown
REGRESS_INSTANCE = --temp-instance=tmp_check --temp-config=test/regress.conf
REGRESS_OPTS = --inputdir=. $(REGRESS_INSTANCE)
REGRESS_PREP = regress-guard

PG_CPPFLAGS = -Isrc -DPG_LLM_VERSION=\"$(EXTVERSION)\" \
	$(shell pkg-config --cflags libcurl json-c 2>/dev/null) \
	-Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers
SHLIB_LINK = $(shell pkg-config --libs libcurl json-c 2>/dev/null || echo -lcurl -ljson-c)
# libpq: the connections between the nodes of a Citus cluster (src/citus_net.c)
PG_CPPFLAGS += -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/versions/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $^ > $@

# The upgrade script from the last release: the changes to the tables and
# the drops of what changed shape, one file a topic
# (sql/upgrade/0.2.0--0.3.0/before-*.sql, after a head that keeps the
# privileges granted on the extension's functions and views), then every
# function and view of the new version defined again from the parts, then
# what needs them (after-*.sql), the privileges granted again, the grants.
UPGRADE_DIR = sql/upgrade/0.2.0--$(EXTVERSION)
UPGRADE_BEFORE = $(UPGRADE_DIR)/head.sql $(sort $(wildcard $(UPGRADE_DIR)/before-*.sql))
UPGRADE_AFTER = $(sort $(wildcard $(UPGRADE_DIR)/after-*.sql)) $(UPGRADE_DIR)/tail.sql
sql/versions/$(EXTENSION)--0.2.0--$(EXTVERSION).sql: $(UPGRADE_BEFORE) $(SQL_PARTS) \
		sql/upgrade/definitions.awk $(UPGRADE_AFTER)
	{ cat $(UPGRADE_BEFORE); \
	  awk -f sql/upgrade/definitions.awk $(SQL_PARTS); \
	  cat $(UPGRADE_AFTER) sql/install/grants.sql; } > $@

# every object is rebuilt when a header changes (structs are shared)
$(OBJS): $(wildcard src/*.h src/worker/*.h)

.PHONY: regress-guard
regress-guard:
	@REGRESS_INSTANCE='$(REGRESS_INSTANCE)' bash test/regress_guard.sh
