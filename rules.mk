# rules.mk - the make rules every folder's Makefile.in includes
#
# A folder's Makefile.in sets TOP, then any of:
#   LIB        archive built from SRCS (util/libutil.a, global/libglobal.a)
#   PROGS      programs; each PROG is built from PROG_SRCS-<name> (default
#              <name>.c) and installed in PROG_DIR ($(TOP)/bin or libexec)
#   TESTS      cmocka unit tests: each X_test is built from X_test.c and
#              linked with testlib/libtestlib.a (temporary folder, file
#              writer, log capture: testlib/testlib.h), TEST_OBJS and
#              TEST_DEPS (archives beyond the folder's LIB)
#   EXTRA_CFLAGS, EXTRA_LIBS   what the folder's code needs beyond util
#   INCLUDES   where headers are looked for (default util/ and global/;
#              util/ and testlib/ see only util/: STYLE.md's layers)
# Lookup tables (global/maps.c) need PCRE2 and Berkeley DB: every link gets
# MAP_LIBS, so any program may use libglobal's tables.
# and then includes this file.

include $(TOP)/config.mk

SANITIZE ?=
ifeq ($(SANITIZE),1)
OPT = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
      -fno-sanitize-recover=undefined
else
OPT = -O2 -g
endif
ifneq ($(CI),)
WERROR = -Werror
endif

INCLUDES ?= -I$(TOP)/util -I$(TOP)/global
CFLAGS_ALL = -std=gnu11 $(OPT) $(WARN) $(WERROR) $(DEFS) \
	$(INCLUDES) -I. $(EXTRA_CFLAGS) $(PCRE2_CFLAGS) \
	$(DB_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(OPT) $(LDFLAGS)
LIBUTIL = $(TOP)/util/libutil.a
LIBGLOBAL = $(TOP)/global/libglobal.a
LIBTEST = $(TOP)/testlib/libtestlib.a
MAP_LIBS = $(PCRE2_LIBS) $(DB_LIBS)

OBJS = $(SRCS:.c=.o)
TEST_BINS = $(TESTS)

.PHONY: all check clean
all: $(LIB) $(addprefix $(PROG_DIR)/,$(PROGS))

%.o: %.c
	$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

ifneq ($(LIB),)
$(LIB): $(OBJS)
	rm -f $@
	ar rcs $@ $(OBJS)
endif

# Programs: PROG_SRCS-name lists the sources of program name.
define prog_rule
$(PROG_DIR)/$(1): $$(patsubst %.c,%.o,$$(or $$(PROG_SRCS-$(1)),$(1).c)) $(PROG_DEPS)
	@mkdir -p $(PROG_DIR)
	$$(CC) $$(LDFLAGS_ALL) -o $$@ $$(filter %.o,$$^) $(PROG_DEPS) $$(EXTRA_LIBS) $$(MAP_LIBS)
endef
$(foreach p,$(PROGS),$(eval $(call prog_rule,$(p))))

ifeq ($(WITH_CMOCKA),yes)
ifneq ($(TESTS),)
# The tests see testlib.h; testlib/ builds its archive (its code calls
# util/, so every test links libutil.a after it).
$(addsuffix .o,$(TESTS)): CFLAGS_ALL += -I$(TOP)/testlib $(CMOCKA_CFLAGS)
$(LIBTEST): $(wildcard $(TOP)/testlib/*.[ch])
	@$(MAKE) --no-print-directory -C $(TOP)/testlib -f Makefile.in all
$(TEST_BINS): %: %.o $(LIB) $(TEST_DEPS) $(LIBTEST)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(TEST_OBJS) $(LIBTEST) $(LIB) \
		$(TEST_DEPS) $(LIBUTIL) $(EXTRA_LIBS) $(MAP_LIBS) $(CMOCKA_LIBS)
endif

check: all $(TEST_BINS)
	@set -e; cd . && for t in $(TEST_BINS); do \
		echo "== $(notdir $(CURDIR))/$$t"; ./$$t; done
else
check: all
	@echo "cmocka not configured: unit tests skipped"
endif

clean:
	rm -f *.o *.d *.a $(TEST_BINS) $(addprefix $(PROG_DIR)/,$(PROGS))

-include $(SRCS:.c=.d) $(addsuffix .d,$(TESTS))

# install: programs go to INSTALL_DIR (set by the folder's Makefile.in),
# with INSTALL_PROG_FLAGS (mode 0755 unless the folder says otherwise).
INSTALL_PROG_FLAGS ?= -m 755
.PHONY: install
install: all
ifneq ($(PROGS),)
	install -d $(DESTDIR)$(INSTALL_DIR)
	for p in $(PROGS); do install $(INSTALL_PROG_FLAGS) $(PROG_DIR)/$$p $(DESTDIR)$(INSTALL_DIR)/$$p || exit 1; done
endif
