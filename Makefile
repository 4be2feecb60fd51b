# Makefile for the enrich extension (PGXS)

EXTENSION = enrich
MODULE_big = enrich
DATA = enrich--0.1.0.sql enrich--0.1.0--0.2.0.sql enrich--0.2.0--0.3.0.sql
DATA_built = enrich--0.3.0.sql
PGFILEDESC = "enrich - B2B data enrichment in SQL"

OBJS = \
	src/enrich.o \
	src/guc.o \
	src/util.o \
	src/owner.o \
	src/json.o \
	src/normalize.o \
	src/normalize_domain.o \
	src/normalize_linkedin.o \
	src/normalize_sql.o \
	src/response.o \
	src/response_headers.o \
	src/http.o \
	src/http_wait.o \
	src/provider.o \
	src/leadlex.o \
	src/slintel.o \
	src/job.o \
	src/cache.o \
	src/cache_pending.o \
	src/spool.o \
	src/spool_flush.o \
	src/spool_read.o \
	src/sync.o \
	src/ratelearn.o \
	src/budget.o \
	src/shmem.o \
	src/stats.o \
	src/dbworkers.o \
	src/credits.o \
	src/credits_role.o \
	src/credits_ledger.o \
	src/credits_mirror.o \
	src/rate.o \
	src/limits.o \
	src/limits_role.o \
	src/queue.o \
	src/ledger.o \
	src/worker.o \
	src/launcher.o \
	src/launcher_hook.o \
	src/worker_turn.o \
	src/worker_write.o \
	src/worker_house.o \
	src/batch.o \
	src/auto.o \
	src/auto_deliver.o

PG_CPPFLAGS = -I$(srcdir)/src $(shell pkg-config --cflags libcurl libpsl libidn2)
SHLIB_LINK = $(shell pkg-config --libs libcurl libpsl libidn2)
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers

REGRESS = setup normalize company leadlex lead faults batch privileges
REGRESS_OPTS = --dbname=enrich_regression

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on the layers' headers (src/LAYERS); the
# transport's, the spool's and the worker's files also on their own
LAYER_HEADERS = src/base.h src/state.h src/transport.h src/providers.h \
	src/storage.h src/entry.h src/normalize.h src/response.h
$(OBJS): $(LAYER_HEADERS)
src/http.o src/http_wait.o: src/http_int.h
src/spool.o src/spool_read.o: src/spool_int.h
src/worker.o src/worker_turn.o src/worker_write.o src/worker_house.o: src/worker.h

# the fresh install script of the current version: every release in order
enrich--0.3.0.sql: enrich--0.1.0.sql enrich--0.1.0--0.2.0.sql enrich--0.2.0--0.3.0.sql
	cat $^ > $@
