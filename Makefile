# Makefile - the bootstrap of sluice's build (committed; the rules are in
# Makefile.in)
#
# ./configure turns Makefile.in into GNUmakefile, which GNU make reads before
# this file: in a configured tree `make ...` never comes here. On a fresh
# clone, or after `make distclean`, this file runs ./install-deps.sh --build
# --check and ./configure, then hands every goal to GNUmakefile, so `make`,
# `make check`, `make run`, `make install` ... need no prior step.
# Options for that first ./configure: make CONFIGURE_FLAGS='--prefix=/usr'.
# The targets and variables are listed at the top of Makefile.in.

SHELL = /bin/sh
GOALS = $(or $(MAKECMDGOALS),all)

# Cleaning a tree that was never configured: nothing there was built by
# the folders' rules, so no configure (and no packages) just for that.
ifeq ($(wildcard config.mk)$(filter-out clean distclean,$(GOALS)),)
$(GOALS):
	rm -rf bin libexec .flavor .sanitizer
else
# All goals in one run of GNUmakefile (make clean all keeps its order).
$(GOALS): bootstrap-delegate
	@:
endif

.PHONY: $(GOALS) bootstrap-delegate
bootstrap-delegate: GNUmakefile
	@$(MAKE) --no-print-directory -f GNUmakefile $(MAKECMDGOALS)

# `+`: make -n on a fresh clone configures too, then shows the rest.
GNUmakefile: Makefile.in configure
	+@./install-deps.sh --build --check
	+./configure $(CONFIGURE_FLAGS)
