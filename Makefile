# odoo_sync: PostgreSQL extension (PGXS) and its Odoo addon.
#
#   make demo     install what is missing, build, and show odoo_sync at work
#   make test     the whole suite on a throwaway cluster (pg_regress, isolation, TAP)
#   make install  install into the system PostgreSQL (what a DBA runs)
#   make bench-decode | bench-capture | bench-deliver | bench-inbound   benchmarks

EXTENSION = odoo_sync
EXTVERSION = 0.1.0
MODULE_big = odoo_sync

OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The install script is assembled from the per-concern files in sql/install/
# (numbered, so the order is stable); upgrade scripts live beside it.
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*--*.sql))

# pg_regress tests: every sql/*.sql that is not an install or upgrade script.
REGRESS = $(sort $(filter-out $(EXTENSION)--%,$(basename $(notdir $(wildcard sql/*.sql)))))
# isolation specs in test/specs, expected output in test/expected
ISOLATION = $(sort $(basename $(notdir $(wildcard test/specs/*.spec))))

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PG_CPPFLAGS = -I$(srcdir)/src $(shell pkg-config --cflags libcurl jansson 2>/dev/null) \
	-DODOO_SYNC_VERSION='"$(EXTVERSION)"'
SHLIB_LINK = $(shell pkg-config --libs libcurl jansson 2>/dev/null || echo -lcurl -ljansson) -lcrypto
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers

EXTRA_CLEAN = tmp_install results regression.diffs regression.out output_iso

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard sql/install/*.sql))
	cat $^ > $@

.PHONY: deps test test-odoo demo demo-odoo bench-decode bench-capture bench-deliver bench-inbound

# Installs the Debian packages the project needs (only those missing).
deps:
	@./test/deps.sh

test: deps all
	@./test/run.sh

test-odoo: deps all
	@TESTS=odoo ./test/run.sh

# The whole loop on a real Odoo 17 server (needs ODOO_SRC, see docs/odoo-addon.md).
demo-odoo: deps all
	@./test/odoo/demo.sh

demo: deps
	@echo "building odoo_sync (make -s all)"; $(MAKE) -s all
	@./demo/demo.sh

bench-decode: deps all
	@./bench/run.sh decode

bench-capture: deps all
	@./bench/run.sh capture

bench-deliver: deps all
	@./bench/run.sh deliver

bench-inbound: deps all
	@./bench/run.sh inbound

print-%:
	@echo $($*)
