# pg_llm: an LLM gateway inside PostgreSQL

EXTENSION = pg_llm
MODULE_big = pg_llm
OBJS = src/pg_llm.o src/config.o src/http.o src/call.o src/chat.o \
	src/stream.o src/sse.o src/json.o src/provider_openai.o src/provider_anthropic.o \
	src/utf8.o src/shmem.o src/queue.o src/worker.o \
	src/usage.o
DATA = $(wildcard sql/pg_llm--*.sql)
PGFILEDESC = "pg_llm - LLM gateway inside PostgreSQL"

# pg_regress scripts, one topic per file; test/run starts the local
# provider and exports its port before running them
REGRESS = setup offline chat anthropic faults stream queue usage jobs security
REGRESS_OPTS = --inputdir=.

PG_CPPFLAGS = -Isrc $(shell pkg-config --cflags libcurl json-c 2>/dev/null) \
	-Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers
SHLIB_LINK = $(shell pkg-config --libs libcurl json-c 2>/dev/null || echo -lcurl -ljson-c)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object is rebuilt when a header changes (structs are shared)
$(OBJS): $(wildcard src/*.h)
