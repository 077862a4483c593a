# vdisk - the one Makefile.
#
#   make             library, CLI, unit/model/crash tests and benchmarks, into build/
#   make test        install missing packages, build everything (plus the ASan/UBSan
#                    build and the fuzzers), then run the whole suite
#   make run         install missing packages, build, create ./vdisk-store with a
#                    demo volume if needed, run vdiskd in the foreground
#                    (scripts/run-daemon.sh; the CLI tour first: make run DEMO=1)
#   make bench       install missing packages, build, run tests/bench/run-bench.sh
#   make asan        the same build with ASan+UBSan, into build/asan/
#   make tsan        vdiskd and vdisk-vmm with ThreadSanitizer, into build/tsan/
#                    (vdiskd's event loop threads share the store and the
#                    templates; the VMM's vCPU threads and main loop share
#                    the devices)
#   make fuzzers     the libFuzzer targets (clang), into build/fuzz/
#   make fuzz        a long fuzz run (tests/fuzz/run-fuzz.sh long)
#   make install     PREFIX=/usr/local, DESTDIR= for staging
#   make clean
#
# Sources are found by wildcard: adding a .c file needs no edit here.
#   libvdisk/src/*.c          -> build/lib/libvdisk.a, build/lib/libvdisk.so
#   formats/src/*.c           -> build/lib/libformats.a (image formats)
#   vmm/*.c but main.c        -> build/lib/libvmm.a (the VMM's machine, devices,
#                                accelerators, NBD disks, checkpoints)
#   vmm/main.c + libvmm.a     -> build/bin/vdisk-vmm
#   tests/guest/*             -> build/guest/test-guest.bin (a freestanding
#                                32-bit x86 guest for vdisk-vmm; gcc -m32, ld)
#   tests/kernel/*            -> build/guest/fake-bzImage (a fake 64-bit kernel
#                                for vdisk-vmm --kernel, in a bzImage of its own)
#   vdisk-cli/*.c             -> build/bin/vdisk
#   tests/{unit,model,crash}/test-NAME.c -> build/tests/test-NAME
#                                (the folder's other .c files are shared helpers)
#   tests/bench/NAME.c        -> build/bench/NAME
#   tests/fuzz/fuzz-NAME.c    -> build/fuzz/fuzz-NAME (clang + libFuzzer)
#
# V=1 shows the full commands.

MAKEFLAGS += --no-print-directory

BUILD   ?= build
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include

# make's built-in default for CC is "cc"; we want gcc unless told otherwise.
ifeq ($(origin CC),default)
CC = gcc
endif
CLANG      ?= clang
PKG_CONFIG ?= pkg-config

VERSION   = 0.1.0
SOVERSION = 0

# ---------------------------------------------------------------------------
# Dependencies, through pkg-config.  The fallbacks let `make clean` and the
# first parse on a fresh machine work before scripts/install-deps.sh has run;
# the targets that install packages re-run make so that these are found.
# libaio ships no .pc file on Debian.  LMDB joins LIB_LIBS with the catalog.

CRYPTO_CFLAGS := $(shell $(PKG_CONFIG) --cflags libcrypto 2>/dev/null)
CRYPTO_LIBS   := $(shell $(PKG_CONFIG) --libs libcrypto 2>/dev/null || echo -lcrypto)
AIO_LIBS      := $(shell $(PKG_CONFIG) --libs libaio 2>/dev/null || echo -laio)
CMOCKA_CFLAGS := $(shell $(PKG_CONFIG) --cflags cmocka 2>/dev/null)
CMOCKA_LIBS   := $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null || echo -lcmocka)

LMDB_LIBS     := $(shell $(PKG_CONFIG) --libs lmdb 2>/dev/null || echo -llmdb)
JANSSON_CFLAGS := $(shell $(PKG_CONFIG) --cflags jansson 2>/dev/null)
JANSSON_LIBS  := $(shell $(PKG_CONFIG) --libs jansson 2>/dev/null || echo -ljansson)

ZLIB_LIBS     := $(shell $(PKG_CONFIG) --libs zlib 2>/dev/null || echo -lz)

# The VMM: unicorn (the emulation accelerator) and libnbd (its disks).
UNICORN_LIBS  := $(shell $(PKG_CONFIG) --libs unicorn 2>/dev/null || echo -lunicorn)
LIBNBD_CFLAGS := $(shell $(PKG_CONFIG) --cflags libnbd 2>/dev/null)
LIBNBD_LIBS   := $(shell $(PKG_CONFIG) --libs libnbd 2>/dev/null || echo -lnbd)
VMM_LIBS      = $(UNICORN_LIBS) $(LIBNBD_LIBS) $(JANSSON_LIBS) -lpthread

LIB_LIBS = $(AIO_LIBS) $(CRYPTO_LIBS) $(LMDB_LIBS) $(JANSSON_LIBS) $(ZLIB_LIBS)

# TLS for NBD (nbd-server): OpenSSL's libssl, for what links nbd-server.
SSL_LIBS      := $(shell $(PKG_CONFIG) --libs libssl 2>/dev/null || echo -lssl)

# ---------------------------------------------------------------------------
# Flags.  CFLAGS and LDFLAGS are the user's to override; the rest is not.
# SAN=1 (set by `make asan`) builds with ASan+UBSan.

CFLAGS ?= -O2 -g
ifeq ($(SAN),1)
CFLAGS   = -O1 -g -fno-omit-frame-pointer
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all
endif
ifeq ($(SAN),thread)
CFLAGS   = -O1 -g -fno-omit-frame-pointer
SANITIZE = -fsanitize=thread
endif

WARN      = -Wall -Wextra -Werror
INCLUDES  = -Ilibvdisk/include -Ilibvdisk/src -Inbd-server/include -Iformats/include -Ivmm
VD_CFLAGS = -std=gnu11 $(WARN) -D_GNU_SOURCE $(INCLUDES) $(CRYPTO_CFLAGS) $(JANSSON_CFLAGS) \
            $(LIBNBD_CFLAGS) \
            $(CFLAGS) $(SANITIZE) -MMD -MP
VD_LDFLAGS = $(LDFLAGS) $(SANITIZE)

# Fuzzers: always clang, always ASan+UBSan+libFuzzer, objects of their own.
FUZZ_SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS = -std=gnu11 $(WARN) -D_GNU_SOURCE $(INCLUDES) $(CRYPTO_CFLAGS) \
              -O1 -g -fno-omit-frame-pointer $(FUZZ_SANITIZE) \
              -fsanitize=fuzzer-no-link -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION \
              -MMD -MP

ifneq ($(V),1)
quiet = @printf '  %-7s %s\n' $(1) $(2);
endif

# ---------------------------------------------------------------------------
# What gets built

OBJ      = $(BUILD)/obj
FUZZ_OBJ = $(BUILD)/fuzz-obj

objs = $(patsubst %.c,$(OBJ)/%.o,$(1))

LIB_SRCS = $(wildcard libvdisk/src/*.c)
LIB_OBJS = $(call objs,$(LIB_SRCS))
LIB_A    = $(BUILD)/lib/libvdisk.a
LIB_SO   = $(BUILD)/lib/libvdisk.so
LIB_SO_REAL = $(BUILD)/lib/libvdisk.so.$(VERSION)
# What programs link against: nothing until the library has a source file.
LIB_DEP  = $(if $(LIB_SRCS),$(LIB_A))

# Image format drivers (raw, vdk, qcow2, VMDK); they use libvdisk.
FMT_SRCS = $(wildcard formats/src/*.c)
FMT_A    = $(BUILD)/lib/libformats.a
FMT_DEP  = $(if $(FMT_SRCS),$(FMT_A))

# The VMM's device models (virtqueues, virtio-blk...), a library so that
# the unit tests drive them without a guest.
VMM_LIB_SRCS = $(filter-out vmm/main.c,$(wildcard vmm/*.c))
VMM_A    = $(BUILD)/lib/libvmm.a
VMM_DEP  = $(if $(VMM_LIB_SRCS),$(VMM_A))
VMM_BIN  = $(if $(wildcard vmm/main.c),$(BUILD)/bin/vdisk-vmm)

# The test guest: freestanding 32-bit x86, loaded and entered at
# GUEST_LOAD by vdisk-vmm (--guest FILE --load ADDR).
GUEST_LOAD  = 0x100000
GUEST_SRCS  = $(wildcard tests/guest/*.c tests/guest/*.S)
GUEST_BIN   = $(if $(GUEST_SRCS),$(BUILD)/guest/test-guest.bin)
GUEST_CFLAGS = -m32 -ffreestanding -fno-pic -fno-pie -fno-stack-protector \
               -fno-asynchronous-unwind-tables -nostdlib -O2 $(WARN)

# The fake kernel: freestanding x86-64 in a bzImage that kernel.ld lays
# out (setup sectors, then the kernel linked at 0x100000), booted by
# vdisk-vmm --kernel.  -mgeneral-regs-only lets it have interrupt handlers.
KERNEL_SRCS  = $(wildcard tests/kernel/*.c tests/kernel/*.S)
KERNEL_IMAGE = $(if $(KERNEL_SRCS),$(BUILD)/guest/fake-bzImage)
KERNEL_OBJS  = $(patsubst tests/kernel/%,$(BUILD)/guest/kernel/%.o,$(basename $(KERNEL_SRCS)))
KERNEL_CFLAGS = -m64 -ffreestanding -fno-pic -fno-pie -mno-red-zone -mgeneral-regs-only \
                -fno-stack-protector -fno-asynchronous-unwind-tables -nostdlib -O2 $(WARN) \
                -Ivmm   # vmm/mp-spec.h, the MP table's layout

CLI_SRCS = $(wildcard vdisk-cli/*.c)
CLI_BIN  = $(if $(CLI_SRCS),$(BUILD)/bin/vdisk)

# The NBD protocol library (knows nothing of libvdisk) and the daemon.
NBDS_SRCS = $(wildcard nbd-server/src/*.c)
NBDS_A    = $(BUILD)/lib/libnbds.a
NBDS_DEP  = $(if $(NBDS_SRCS),$(NBDS_A))
VDISKD_SRCS = $(wildcard vdiskd/*.c)
VDISKD_BIN  = $(if $(VDISKD_SRCS),$(BUILD)/bin/vdiskd)

# A folder of programs.  $(call programs,FOLDER,PREFIX,OUTDIR,LIBS): every
# FOLDER/PREFIX*.c is the main file of one program OUTDIR/NAME, linked with
# the folder's other .c files (shared helpers), libvdisk.a and LIBS.
mains   = $(wildcard $(1)/$(2)*.c)
helpers = $(filter-out $(call mains,$(1),$(2)),$(wildcard $(1)/*.c))
progs   = $(patsubst $(1)/%.c,$(3)/%,$(call mains,$(1),$(2)))

define programs
$(call progs,$(1),$(2),$(3)): $(3)/%: $(OBJ)/$(1)/%.o \
		$(call objs,$(call helpers,$(1),$(2))) $(NBDS_DEP) $(FMT_DEP) $(VMM_DEP) \
		$(LIB_DEP)
	@mkdir -p $$(@D)
	$$(call quiet,LINK,$$@)$$(CC) $$(VD_LDFLAGS) -o $$@ $$^ $(4) $$(LIB_LIBS) $$(SSL_LIBS)
endef

TEST_DIRS  = tests/unit tests/model tests/crash
TEST_BINS  = $(foreach d,$(TEST_DIRS),$(call progs,$(d),test-,$(BUILD)/tests))
BENCH_BINS = $(call progs,tests/bench,,$(BUILD)/bench)
FUZZ_BINS  = $(call progs,tests/fuzz,fuzz-,$(BUILD)/fuzz)
FUZZ_LIB_A = $(FUZZ_OBJ)/libvdisk.a
FUZZ_NBDS_A = $(FUZZ_OBJ)/libnbds.a
FUZZ_FMT_A = $(FUZZ_OBJ)/libformats.a

# Test programs of the three folders share build/tests/: names must differ.
DUP_TESTS = $(sort $(foreach t,$(TEST_BINS),$(if $(filter-out 1,$(words $(filter $(t),$(TEST_BINS)))),$(t))))
ifneq ($(DUP_TESTS),)
$(error test programs with the same name in two of $(TEST_DIRS): $(DUP_TESTS))
endif

ALL_SRCS = $(LIB_SRCS) $(FMT_SRCS) $(wildcard vmm/*.c) $(CLI_SRCS) $(NBDS_SRCS) $(VDISKD_SRCS) \
           $(foreach d,$(TEST_DIRS) tests/bench,$(wildcard $(d)/*.c))
FUZZ_SRCS = $(LIB_SRCS) $(FMT_SRCS) $(NBDS_SRCS) $(wildcard tests/fuzz/*.c)

# ---------------------------------------------------------------------------
# Targets

.PHONY: all lib cli daemon vmm tests benchmarks fuzzers guest asan tsan deps test run bench fuzz \
        clean install uninstall

all: lib cli daemon vmm tests benchmarks guest

lib: $(if $(LIB_SRCS),$(LIB_A) $(LIB_SO)) $(FMT_DEP)
cli: $(CLI_BIN)
daemon: $(VDISKD_BIN)
vmm: $(VMM_BIN)
tests: $(TEST_BINS)
benchmarks: $(BENCH_BINS)
fuzzers: $(FUZZ_BINS)
guest: $(GUEST_BIN) $(KERNEL_IMAGE)

# The same rules again, parameterised by BUILD, with sanitizers on.
asan:
	$(MAKE) BUILD=$(BUILD)/asan SAN=1 lib cli daemon vmm tests
tsan:
	$(MAKE) BUILD=$(BUILD)/tsan SAN=thread daemon vmm

deps:
	sh scripts/install-deps.sh

# These re-run make after deps so that pkg-config sees fresh installs.
test: deps
	$(MAKE) all asan tsan fuzzers
	BUILD=$(BUILD) bash tests/run-tests.sh

run: deps
	$(MAKE) lib cli daemon
	$(if $(DEMO),VDISK=$(abspath $(BUILD))/bin/vdisk sh scripts/demo.sh)
	VDISK=$(abspath $(BUILD))/bin/vdisk VDISKD=$(abspath $(BUILD))/bin/vdiskd \
	    sh scripts/run-daemon.sh

bench: deps
	$(MAKE) all
	BUILD=$(abspath $(BUILD)) sh tests/bench/run-bench.sh

fuzz: deps
	$(MAKE) fuzzers
	BUILD=$(abspath $(BUILD)) sh tests/fuzz/run-fuzz.sh long

clean:
	rm -rf $(BUILD)

# ---------------------------------------------------------------------------
# Rules

$(OBJ)/%.o: %.c
	@mkdir -p $(@D)
	$(call quiet,CC,$@)$(CC) $(VD_CFLAGS) $(EXTRA_CFLAGS) -c -o $@ $<

# One set of library objects, position independent, for both libraries.
$(LIB_OBJS): EXTRA_CFLAGS = -fPIC
$(call objs,$(wildcard $(foreach d,$(TEST_DIRS),$(d)/*.c))): EXTRA_CFLAGS = $(CMOCKA_CFLAGS)

$(LIB_A): $(LIB_OBJS)
	@mkdir -p $(@D)
	@rm -f $@
	$(call quiet,AR,$@)$(AR) rcs $@ $^

$(LIB_SO_REAL): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(call quiet,LINK,$@)$(CC) -shared -Wl,-soname,libvdisk.so.$(SOVERSION) \
		$(VD_LDFLAGS) -o $@ $^ $(LIB_LIBS)

$(LIB_SO): $(LIB_SO_REAL)
	@ln -sf libvdisk.so.$(VERSION) $(BUILD)/lib/libvdisk.so.$(SOVERSION)
	@ln -sf libvdisk.so.$(SOVERSION) $@

$(FMT_A): $(call objs,$(FMT_SRCS))
	@mkdir -p $(@D)
	@rm -f $@
	$(call quiet,AR,$@)$(AR) rcs $@ $^

$(VMM_A): $(call objs,$(VMM_LIB_SRCS))
	@mkdir -p $(@D)
	@rm -f $@
	$(call quiet,AR,$@)$(AR) rcs $@ $^

$(BUILD)/bin/vdisk-vmm: $(OBJ)/vmm/main.o $(VMM_A)
	@mkdir -p $(@D)
	$(call quiet,LINK,$@)$(CC) $(VD_LDFLAGS) -o $@ $^ $(VMM_LIBS)

$(BUILD)/bin/vdisk: $(call objs,$(CLI_SRCS)) $(FMT_DEP) $(LIB_DEP)
	@mkdir -p $(@D)
	$(call quiet,LINK,$@)$(CC) $(VD_LDFLAGS) -o $@ $^ $(LIB_LIBS)

$(NBDS_A): $(call objs,$(NBDS_SRCS))
	@mkdir -p $(@D)
	@rm -f $@
	$(call quiet,AR,$@)$(AR) rcs $@ $^

$(BUILD)/bin/vdiskd: $(call objs,$(VDISKD_SRCS)) $(NBDS_DEP) $(LIB_DEP)
	@mkdir -p $(@D)
	$(call quiet,LINK,$@)$(CC) $(VD_LDFLAGS) -o $@ $^ $(LIB_LIBS) $(SSL_LIBS)

# Test and benchmark programs.
$(foreach d,$(TEST_DIRS),$(eval $(call programs,$(d),test-,$(BUILD)/tests,$(CMOCKA_LIBS))))
$(eval $(call programs,tests/bench,,$(BUILD)/bench,-lm))

# The test guest: its own flags, one flat binary.
$(BUILD)/guest/%.o: tests/guest/%.c
	@mkdir -p $(@D)
	$(call quiet,CC,$@)$(CC) $(GUEST_CFLAGS) -c -o $@ $<
$(BUILD)/guest/%.o: tests/guest/%.S
	@mkdir -p $(@D)
	$(call quiet,AS,$@)$(CC) -m32 -c -o $@ $<
$(BUILD)/guest/test-guest.elf: $(patsubst tests/guest/%,$(BUILD)/guest/%.o,$(basename $(GUEST_SRCS))) \
		tests/guest/guest.ld
	$(call quiet,LD,$@)$(LD) -m elf_i386 --defsym GUEST_LOAD=$(GUEST_LOAD) \
		-T tests/guest/guest.ld -o $@ $(filter %.o,$^)
$(BUILD)/guest/test-guest.bin: $(BUILD)/guest/test-guest.elf
	$(call quiet,OBJCOPY,$@)objcopy -O binary $< $@

# The fake kernel: objcopy of the linked image is the bzImage.
$(BUILD)/guest/kernel/%.o: tests/kernel/%.c
	@mkdir -p $(@D)
	$(call quiet,CC,$@)$(CC) $(KERNEL_CFLAGS) -c -o $@ $<
$(BUILD)/guest/kernel/%.o: tests/kernel/%.S
	@mkdir -p $(@D)
	$(call quiet,AS,$@)$(CC) -m64 -c -o $@ $<
$(KERNEL_OBJS): $(wildcard tests/kernel/*.h) vmm/mp-spec.h
$(BUILD)/guest/fake-kernel.elf: $(KERNEL_OBJS) tests/kernel/kernel.ld
	$(call quiet,LD,$@)$(LD) -m elf_x86_64 -T tests/kernel/kernel.ld -o $@ $(filter %.o,$^)
$(BUILD)/guest/fake-bzImage: $(BUILD)/guest/fake-kernel.elf
	$(call quiet,OBJCOPY,$@)objcopy -O binary $< $@

# Fuzzers: the library and the targets compiled again with clang.
$(FUZZ_OBJ)/%.o: %.c
	@mkdir -p $(@D)
	$(call quiet,CLANG,$@)$(CLANG) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_LIB_A): $(patsubst %.c,$(FUZZ_OBJ)/%.o,$(LIB_SRCS))
	@rm -f $@
	$(call quiet,AR,$@)$(AR) rcs $@ $^

$(FUZZ_FMT_A): $(patsubst %.c,$(FUZZ_OBJ)/%.o,$(FMT_SRCS))
	@rm -f $@
	$(call quiet,AR,$@)$(AR) rcs $@ $^

$(FUZZ_NBDS_A): $(patsubst %.c,$(FUZZ_OBJ)/%.o,$(NBDS_SRCS))
	@rm -f $@
	$(call quiet,AR,$@)$(AR) rcs $@ $^

$(FUZZ_BINS): $(BUILD)/fuzz/%: $(FUZZ_OBJ)/tests/fuzz/%.o \
		$(patsubst %.c,$(FUZZ_OBJ)/%.o,$(call helpers,tests/fuzz,fuzz-)) \
		$(if $(NBDS_SRCS),$(FUZZ_NBDS_A)) $(if $(FMT_SRCS),$(FUZZ_FMT_A)) \
		$(if $(LIB_SRCS),$(FUZZ_LIB_A))
	@mkdir -p $(@D)
	$(call quiet,LINK,$@)$(CLANG) $(FUZZ_SANITIZE) -fsanitize=fuzzer -o $@ $^ $(LIB_LIBS) $(SSL_LIBS)

-include $(patsubst %.c,$(OBJ)/%.d,$(ALL_SRCS))
-include $(patsubst %.c,$(FUZZ_OBJ)/%.d,$(FUZZ_SRCS))

# ---------------------------------------------------------------------------
# Install

install: lib cli daemon vmm
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 755 $(BUILD)/bin/vdisk $(DESTDIR)$(BINDIR)/vdisk
	install -m 755 $(BUILD)/bin/vdisk-vmm $(DESTDIR)$(BINDIR)/vdisk-vmm
	install -m 755 $(BUILD)/bin/vdiskd $(DESTDIR)$(BINDIR)/vdiskd
	install -d $(DESTDIR)$(LIBDIR)/systemd/system
	sed -e 's|/usr/local/bin/|$(BINDIR)/|' vdiskd/vdiskd.service \
	    > $(DESTDIR)$(LIBDIR)/systemd/system/vdiskd.service
	install -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libvdisk.a
	install -m 755 $(LIB_SO_REAL) $(DESTDIR)$(LIBDIR)/libvdisk.so.$(VERSION)
	ln -sf libvdisk.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libvdisk.so.$(SOVERSION)
	ln -sf libvdisk.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libvdisk.so
	install -m 644 libvdisk/include/vdisk.h $(DESTDIR)$(INCLUDEDIR)/vdisk.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(AIO_LIBS) $(LMDB_LIBS) $(JANSSON_LIBS)|g' \
	    libvdisk/libvdisk.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/libvdisk.pc

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/vdisk $(DESTDIR)$(INCLUDEDIR)/vdisk.h $(DESTDIR)$(BINDIR)/vdisk-vmm \
	      $(DESTDIR)$(BINDIR)/vdiskd $(DESTDIR)$(LIBDIR)/systemd/system/vdiskd.service \
	      $(DESTDIR)$(LIBDIR)/libvdisk.a $(DESTDIR)$(LIBDIR)/libvdisk.so \
	      $(DESTDIR)$(LIBDIR)/libvdisk.so.$(SOVERSION) \
	      $(DESTDIR)$(LIBDIR)/libvdisk.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/libvdisk.pc
