# Makefile - sluice's top-level build (committed; runs ./configure when needed)
#
#   make                 build bin/ and libexec/
#   make check           unit tests (cmocka) and system tests (pytest)
#   make check SANITIZE=1   the same, built with ASan + UBSan
#   make run [RUN_RELAYHOST='[127.0.0.1]:2526']   build, create an instance
#                        under ./run, start it in the foreground (with
#                        RUN_RELAYHOST every message goes to that server)
#   make bench           sluice against Postfix on the same load (bench/README)
#   make torture [SOAK_SECONDS=3600 SOAK_RATE=20 KILLSTORM_LONG_MESSAGES=20000]
#                        long runs CI does not do: a kill storm and a soak (tests/torture/)
#   make install DESTDIR=... PREFIX=...
#   make fuzz [FUZZ_SECONDS=60]   libFuzzer targets (clang) run for
#                        FUZZ_SECONDS each (fuzz/Makefile.in)
#   make fuzz-replay     each fuzz target once over its committed corpus
#                        (unit-check does it too when clang is installed)
#   make fresh-check     as root: the README's commands (make run with one
#                        message sent, then make check) in a fresh minbase
#                        Debian 12 chroot, so a package install-deps.sh
#                        forgets fails here (slow; CI does not run it;
#                        tests/fresh/fresh-check.sh says more)
#
# Packages: make, make install and make run install (as root) or name what
# `./install-deps.sh --build` lists; make check, torture and fuzz the full set.

SHELL = /bin/sh
PYTHON = /usr/bin/python3
SANITIZE ?=
export SANITIZE CI

# Libraries first, then every folder that has a Makefile.in.
LIBDIRS = util global
PROGDIRS = $(filter-out $(LIBDIRS),$(patsubst %/Makefile.in,%,$(sort $(wildcard */Makefile.in))))
SUBDIRS = $(LIBDIRS) $(PROGDIRS)

# A root-made instance runs its daemons as nobody (sluice init), who must
# reach the instance's folder: a tree under /root cannot be, so make run
# then puts the instance under /var/tmp and says so.
RUN_UNREACHABLE = $(shell if [ "$$(id -u)" = 0 ] && ! setpriv --reuid=nobody \
	--regid=nogroup --clear-groups test -x "$(CURDIR)" 2>/dev/null; then echo yes; fi)
RUN_DIR = $(if $(RUN_UNREACHABLE),/var/tmp/sluice-run,$(CURDIR)/run)
RUN_PORT ?= 2525
RUN_RELAYHOST ?=

.PHONY: all deps check lint unit-check system-check run install clean distclean \
	fuzz fuzz-replay bench torture deps-build fresh-check

all: config.mk flavor
	@for d in $(SUBDIRS); do $(MAKE) --no-print-directory -C $$d -f Makefile.in all || exit 1; done

deps:
	@./install-deps.sh --check

deps-build:
	@./install-deps.sh --build --check

config.mk: configure
	@./install-deps.sh --build --check
	./configure $(CONFIGURE_FLAGS)

# A change of SANITIZE rebuilds everything: objects of both kinds never mix.
flavor: config.mk
	@want="SANITIZE=$(SANITIZE)"; have=$$(cat .flavor 2>/dev/null); \
	if [ "$$want" != "$$have" ]; then \
		for d in $(SUBDIRS); do $(MAKE) --no-print-directory -s -C $$d -f Makefile.in clean; done; \
		echo "$$want" > .flavor; \
	fi

check: deps all
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory unit-check
	@$(MAKE) --no-print-directory system-check

# STYLE.md: these functions never appear in our code.
BANNED = strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol
lint:
	@if grep -nE '\b($(BANNED))[[:space:]]*\(' $$(find . -name '*.[ch]' -not -path './run/*' -not -path './.git/*'); then \
		echo "lint: banned function used (see STYLE.md)"; exit 1; \
	else echo "lint: no banned functions"; fi

# Sanitizer reports of detached daemons (stderr is /dev/null there) go to
# files under .sanitizer/; system-check fails when any was written.
SAN_DIR = $(CURDIR)/.sanitizer
ifeq ($(SANITIZE),1)
SAN_UNIT_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$(SAN_DIR)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(SAN_DIR)/ubsan
endif

unit-check: all
	@for d in $(SUBDIRS); do $(SAN_UNIT_ENV) $(MAKE) --no-print-directory -C $$d -f Makefile.in check || exit 1; done

system-check: deps all
	@rm -rf $(SAN_DIR); mkdir -p $(SAN_DIR)
	$(SAN_ENV) SLUICE_TOP=$(CURDIR) $(PYTHON) -m pytest -q -p no:cacheprovider tests $(PYTEST_FLAGS)
	@if [ -n "$$(ls -A $(SAN_DIR))" ]; then \
		echo "sanitizer reports from daemons:"; cat $(SAN_DIR)/*; exit 1; \
	else echo "sanitizers: no reports"; fi

run: deps-build all
	@if [ -n "$(RUN_UNREACHABLE)" ]; then \
		echo "note: the instance's daemons run as nobody, who cannot reach $(CURDIR):"; \
		echo "      the instance is $(RUN_DIR) instead of ./run"; fi
	@if [ ! -f $(RUN_DIR)/main.cf ]; then bin/sluice init $(RUN_DIR) --smtp-port $(RUN_PORT); fi
	@if ! grep -q '^mail_spool_directory' $(RUN_DIR)/main.cf; then \
		echo "note: $(RUN_DIR) predates local delivery (no Maildirs there); rm -rf it for a fresh instance"; fi
	@if [ -n "$(RUN_RELAYHOST)" ]; then bin/sluice -c $(RUN_DIR) conf 'relayhost=$(RUN_RELAYHOST)'; fi
	@echo
	@echo "sluice is starting in the foreground (Ctrl-C stops it). In another shell:"
	@echo "  swaks --server 127.0.0.1:$(RUN_PORT) --to user@localhost --from you@example.test"
	@echo "  echo hello | bin/sendmail -C $(RUN_DIR) user@localhost"
	@echo "  ls $(RUN_DIR)/mail/user/new/     # the message, one file per message (Maildir)"
	@echo "  bin/sluice -c $(RUN_DIR) queue;  tail -f $(RUN_DIR)/log/maillog"
	@echo "Mail to other domains goes out by DNS (off in this instance) or RUN_RELAYHOST."
	@echo
	bin/sluice -c $(RUN_DIR) start -f

install: all
	@for d in $(SUBDIRS); do $(MAKE) --no-print-directory -C $$d -f Makefile.in install || exit 1; done

clean:
	@for d in $(SUBDIRS); do [ ! -f config.mk ] || $(MAKE) --no-print-directory -C $$d -f Makefile.in clean; done
	rm -rf bin libexec .flavor

bench: all
	$(PYTHON) bench/bench.py

torture: deps all
	SLUICE_TOP=$(CURDIR) $(PYTHON) -m pytest -q -s -p no:cacheprovider \
		tests/torture/killstorm_long.py tests/torture/soak.py $(PYTEST_FLAGS)

FUZZ_SECONDS ?= 60
fuzz: deps config.mk
	@$(MAKE) --no-print-directory -C fuzz -f Makefile.in fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

fuzz-replay: deps config.mk
	@$(MAKE) --no-print-directory -C fuzz -f Makefile.in fuzz-replay

fresh-check:
	./tests/fresh/fresh-check.sh

distclean: clean
	rm -f config.mk
