# nanoMolmo2 in C: the build.
#
#   make            build every chapter
#   make ch01 .. ch07   build that chapter and the ones before it, nothing else
#   make test       unit, CLI and bad-input tests (under ASan+UBSan), the build without
#                   OpenMP, then `make verify`
#   make verify     parity with PyTorch/transformers (creates the reference venv on first use)
#   make verify-gpu every CUDA op against the C oracle (needs a GPU)
#   make bench      CPU benchmarks side by side with PyTorch
#   make bench-gpu  CUDA timings side by side with PyTorch on the same GPU (needs a GPU)
#   make fuzz       the libFuzzer targets, one per parser of user input (tests/fuzz)
#   make clean
#
# Switches: ASAN=1 (AddressSanitizer + UBSan build in build/asan), NO_CUDA=1,
# NO_OPENMP=1 (build in build/noomp), NO_MPI=1, CC=clang.
#
# `make train` and `make test` first run ./prereqs.sh, which installs what the machine
# lacks (apt-get, sudo when not root) or names the packages and stops; the checklist
# line every `make` prints shows each prerequisite.

ifeq ($(origin CC),default)
  CC     := gcc
endif
NVCC     ?= $(shell command -v nvcc 2>/dev/null)
PYTHON   ?= python3
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))

ifeq ($(NO_CUDA),1)
  NVCC :=
endif

# ---- flags -------------------------------------------------------------------
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter
CSTD     := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
ifeq ($(ASAN),1)
  BUILD  := build/asan
  OPT    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  # CUDA's runtime and ASan's shadow memory do not mix well; the ASan build
  # tests the C paths and links the CUDA stub.
  NVCC   :=
else
  # a build without OpenMP has objects of its own, so that switching back and
  # forth never mixes the two (make sees nothing to rebuild otherwise)
  BUILD  := $(if $(filter 1,$(NO_OPENMP)),build/noomp,build/release)
  OPT    := -O3 -march=native -g
endif

OMP_OK := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
ifeq ($(NO_OPENMP),1)
  OMP_OK :=
endif
OMPFLAG := $(if $(OMP_OK),-fopenmp,)

CFLAGS   := $(CSTD) $(OPT) $(WARN) $(OMPFLAG) -I. $(EXTRA_CFLAGS)
# libjpeg-turbo decodes JPEGs as PIL does (02_vit/jpeg.c): a prerequisite, like
# stb_image (Debian: libjpeg62-turbo-dev); without its header the build stops
# with a message naming the package.
LDLIBS   := -lm -ljpeg $(OMPFLAG)

ifneq ($(NVCC),)
  CFLAGS    += -DNM_CUDA
  NVCCFLAGS := -O3 -std=c++17 -I. -DNM_CUDA --Werror all-warnings -Xcompiler -Wall,-Wextra,-Wno-unused-parameter \
               -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
               -gencode arch=compute_90,code=compute_90
  LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
endif

# MPI is chapter 06's alone: its objects compile with MPI's include flags and
# its binary links MPI's libraries (and NCCL in a CUDA build), as mpicc
# reports them. Without an mpicc chapter 06 is not built, and says so in the
# checklist; chapters 01-05 never need it.
MPICC    ?= $(shell command -v mpicc 2>/dev/null)
ifeq ($(NO_MPI),1)
  MPICC  :=
endif
MPI_CFLAGS := $(if $(MPICC),$(patsubst -I%,-isystem %,$(shell $(MPICC) --showme:compile 2>/dev/null)))
MPI_LIBS   := $(if $(MPICC),$(shell $(MPICC) --showme:link 2>/dev/null))
NOT_BUILT  := $(if $(MPI_LIBS),,06_distributed)
$(BUILD)/06_distributed/%.o: CFLAGS += $(MPI_CFLAGS)
$(BUILD)/06_distributed/%.cu.o: NVCCFLAGS += $(MPI_CFLAGS)
$(BUILD)/tests/%_ch06.o: CFLAGS += $(MPI_CFLAGS)

# ---- the chapters ------------------------------------------------------------
# A chapter is a folder. Its library is every .c file in it except run.c (the
# chapter's command line) and cuda_stub.c (what stands in for its .cu files in
# a build without CUDA). Chapter N links the libraries of chapters 1..N and
# nothing after: `make ch04` builds 01..04 only. The book's weaver reads the
# same lists (`make print-sources`).
CHAPTERS := 01_tensor 02_vit 03_connector 04_qwen 05_training 06_distributed 07_video_longctx

# Reading order where it matters (the book follows it); files not listed come after, sorted.
ORDER_01_tensor := common dtype tensor rng json safetensors torchbin matmul attention check bench
ORDER_02_vit    := image jpeg preprocess vit
ORDER_03_connector := ops connector gradcheck
ORDER_04_qwen   := unicode unicode_tables tokenizer bpe_train ops qwen generate
ORDER_05_training := config data vlm backward lm loss adamw checkpoint world eval
ordered = $(wildcard $(patsubst %,$(1)/%.c,$(ORDER_$(1))))
built  = $(if $(filter $(1),$(NOT_BUILT)),,$(2))
lib_c  = $(call built,$(1),$(filter-out $(1)/run.c $(1)/cuda_stub.c,$(call ordered,$(1)) \
           $(filter-out $(call ordered,$(1)),$(sort $(wildcard $(1)/*.c)))))
lib_cu = $(call built,$(1),$(sort $(wildcard $(1)/*.cu)))
lib_objs = $(patsubst %.c,$(BUILD)/%.o,$(call lib_c,$(1))) \
           $(if $(NVCC),$(patsubst %.cu,$(BUILD)/%.cu.o,$(call lib_cu,$(1))),\
                $(patsubst %.c,$(BUILD)/%.o,$(call built,$(1),$(wildcard $(1)/cuda_stub.c))))

# Release binaries sit in the chapter folders (./01_tensor/run); every other
# build's under its build folder (build/asan/01_tensor/run, build/noomp/...), so
# that building one never replaces the binaries the others' tests run.
RUNDIR := $(if $(filter build/release,$(BUILD)),,$(BUILD)/)

.PHONY: all $(foreach c,$(CHAPTERS),ch$(firstword $(subst _, ,$(c)))) test test-c test-asan verify \
        verify-gpu bench-gpu bench fuzz clean checklist venv print-sources book book-check
.DEFAULT_GOAL := all

# For chapter NN_name: OBJNN (its objects and all earlier ones), target chNN,
# NN_name/run when run.c exists, and tests/{test,verify}_chNN when present.
define CHAPTER_RULES
N_$(1) := $(firstword $(subst _, ,$(1)))
OBJ$$(N_$(1)) := $$(OBJ_PREV) $$(call lib_objs,$(1))
OBJ_PREV := $$(OBJ$$(N_$(1)))
ch$$(N_$(1)): $$(call built,$(1),$$(if $$(wildcard $(1)/run.c),$$(RUNDIR)$(1)/run))
$$(RUNDIR)$(1)/run: $$(BUILD)/$(1)/run.o $$(OBJ$$(N_$(1)))
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) $$^ -o $$@ $$(LDLIBS)
$$(BUILD)/tests/test_ch$$(N_$(1)): $$(BUILD)/tests/test_ch$$(N_$(1)).o $$(OBJ$$(N_$(1)))
	$$(CC) $$(CFLAGS) $$^ -o $$@ $$(LDLIBS)
$$(BUILD)/tests/verify_ch$$(N_$(1)): $$(BUILD)/tests/verify_ch$$(N_$(1)).o $$(OBJ$$(N_$(1)))
	$$(CC) $$(CFLAGS) $$^ -o $$@ $$(LDLIBS)
$$(BUILD)/tests/verify_gpu_ch$$(N_$(1)): $$(BUILD)/tests/verify_gpu_ch$$(N_$(1)).o $$(OBJ$$(N_$(1)))
	$$(CC) $$(CFLAGS) $$^ -o $$@ $$(LDLIBS)
endef
OBJ_PREV :=
$(foreach c,$(CHAPTERS),$(eval $(call CHAPTER_RULES,$(c))))
# chapter 06's binary and GPU check, and chapter 07's programs that link its
# library after it: MPI, and NCCL beside cuBLAS in a CUDA build
MPI_LINK := $(if $(MPI_LIBS),$(MPI_LIBS) $(if $(NVCC),-lnccl))
$(RUNDIR)06_distributed/run $(BUILD)/tests/verify_gpu_ch06: LDLIBS += $(MPI_LINK)
$(RUNDIR)07_video_longctx/run $(BUILD)/tests/test_ch07 $(BUILD)/tests/verify_ch07 $(BUILD)/tests/verify_gpu_ch07: \
    LDLIBS += $(MPI_LINK)

# chNN also builds the chapters before it
ch02: ch01
ch03: ch02
ch04: ch03
ch05: ch04
ch06: ch05
ch07: ch06

all: checklist $(foreach c,$(CHAPTERS),ch$(firstword $(subst _, ,$(c))))

checklist:
	@./prereqs.sh list
	@echo "nanoMolmo2 build: CC=$(CC) ($(shell $(CC) -dumpversion)), OpenMP: $(if $(OMP_OK),yes,no), \
	CUDA: $(if $(NVCC),yes ($(NVCC)),no$(if $(filter 1,$(ASAN)), (ASan build uses the stubs),)), \
	MPI: $(if $(MPI_LIBS),yes ($(MPICC): chapter 06 built),no (chapter 06 not built)), build dir: $(BUILD)"

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

# ---- tests ---------------------------------------------------------------------
# Every tests/test_chNN.c and tests/verify_chNN.c is a program; tests/run.sh runs
# them chapter by chapter with the CLI tests (tests/cli_chNN.sh) and the
# reference scripts (tests/reference/ref_chNN.py, check_chNN.py).
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_ch*.c tests/verify_ch*.c))
GPU_BINS  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/verify_gpu_ch*.c))
GPU_BINS  := $(if $(NOT_BUILT),$(filter-out %_ch06,$(GPU_BINS)),$(GPU_BINS))

# The reference venv lives outside the clone, keyed by the requirements hash,
# so a second run (and CI on the same machine) starts in seconds.
REQ_HASH := $(shell sha256sum tests/reference/requirements.txt 2>/dev/null | cut -c1-12)
VENV     ?= $(HOME)/.cache/nanomolmo2/venv-$(REQ_HASH)
VPY      := $(VENV)/bin/python

venv: $(VENV)/.ok
$(VENV)/.ok: tests/reference/requirements.txt
	@echo "creating the reference venv at $(VENV) (first use only; a few minutes)"
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/reference/requirements.txt
	touch $@

REF := build/ref

# test-c: everything in C (unit, CLI, bad input, the build without OpenMP);
# verify: PyTorch parity. The driver counts PASS/FAIL lines and prints the
# total last.
test-c: all $(TEST_BINS)
	@BUILD=$(BUILD) tests/run.sh c
test-asan:
	$(MAKE) ASAN=1 test-c
verify: all $(TEST_BINS) venv
	@BUILD=$(BUILD) VPY=$(VPY) REF=$(REF) tests/run.sh verify
test:
	@./prereqs.sh test
	@$(MAKE) --no-print-directory ASAN=1 all $(subst build/release,build/asan,$(TEST_BINS)) >/dev/null
	@$(MAKE) --no-print-directory all $(TEST_BINS) venv >/dev/null
	@$(MAKE) --no-print-directory book >/dev/null
	@BUILD=$(BUILD) ASAN_BUILD=build/asan VPY=$(VPY) REF=$(REF) tests/run.sh all

# verify_gpu_chNN compare each CUDA op with its C twin; they need an nvcc build.
verify-gpu: all $(GPU_BINS)
	@BUILD=$(BUILD) tests/gpu.sh

# bench-gpu: the CUDA timings that verify_gpu_ch01/02 print, next to PyTorch's on
# the same GPU (needs a python3 with torch and transformers, as the device machine has).
GPU_PY ?= python3
bench-gpu: all $(BUILD)/tests/verify_gpu_ch01 $(BUILD)/tests/verify_gpu_ch02
	@mkdir -p $(BUILD)/bench
	@$(BUILD)/tests/verify_gpu_ch01 > $(BUILD)/bench/gpu_c.log; $(BUILD)/tests/verify_gpu_ch02 >> $(BUILD)/bench/gpu_c.log; \
	    grep '^# ' $(BUILD)/bench/gpu_c.log | grep -i 'speed\|ViT-L\|device'
	$(GPU_PY) tests/reference/bench_gpu.py --c-log $(BUILD)/bench/gpu_c.log

bench: all venv
	@VPY=$(VPY) $(VPY) tests/reference/bench.py

# ---- the main job: the nano VLM trained from nothing on this CPU ----------------
# World, BPE vocabulary, ViT feature cache, stage 1, stage 2, evaluation and a
# sample answer (no Python needed; about 20 minutes on 2 cores).
# The build it needs runs on every core (in a fresh clone it is part of the twenty minutes).
NPROC := $(shell nproc 2>/dev/null || echo 2)
train:
	@./prereqs.sh train
	$(MAKE) --no-print-directory -j$(NPROC) ch02 ch04 ch05
	05_training/train_nano.sh quick build/world
# The longer schedule that produced the shipped checkpoint (about three and a quarter
# hours on 2 cores); installs it in models/nano.
train-long:
	@./prereqs.sh train
	$(MAKE) --no-print-directory -j$(NPROC) ch02 ch04 ch05
	INSTALL=models/nano 05_training/train_nano.sh long build/world-long
.PHONY: train train-long

# ---- fuzzing (clang's libFuzzer) -----------------------------------------------
# One target per parser of user input, tests/fuzz/fuzz_NAME.c, with its seed corpus
# (real files of the project) in tests/fuzz/seeds/NAME. The chapters' library files
# (and their CUDA stubs) are compiled once for it, with ASan and UBSan, without
# OpenMP; `make fuzz` runs every target FUZZ_SECONDS and prints libFuzzer's final
# figures (executions, coverage) for each; a finding stops it, with the input saved
# as build/fuzz/crash-* (or leak-*, timeout-*). The inputs of earlier findings,
# tests/fuzz/regressions/NAME-*, are replayed first. One target: make fuzz FUZZ=image.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ ?= $(FUZZ_TARGETS)
FUZZ_CFLAGS := $(CSTD) -g -O1 -I. -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_LIB_C := $(foreach c,01_tensor 02_vit 03_connector 04_qwen 05_training 07_video_longctx,$(call lib_c,$(c)) \
                $(wildcard $(c)/cuda_stub.c))
FUZZ_OBJ := $(patsubst %.c,build/fuzz/obj/%.o,$(FUZZ_LIB_C))
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(FUZZ_OBJ)
	@echo "clang ... -fsanitize=fuzzer $< (chapters 01-05, 07) -o $@"
	@clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJ) -o $@ -lm -ljpeg
# Inputs up to 4 KiB (16 KiB for a tokenizer.json or an image). The dataset reader
# stops through fail_input, whose longjmp back leaves what the loader had
# allocated: no leak detection there.
fuzz: $(patsubst %,build/fuzz/fuzz_%,$(FUZZ))
	@for t in $(FUZZ); do \
	    mkdir -p build/fuzz/corpus/$$t; \
	    if ls tests/fuzz/regressions/$$t-* >/dev/null 2>&1; then \
	        build/fuzz/fuzz_$$t tests/fuzz/regressions/$$t-* >build/fuzz/$$t.replay.log 2>&1 || \
	            { tail -20 build/fuzz/$$t.replay.log; echo "fuzz_$$t: an earlier finding is back"; exit 1; }; \
	        echo "fuzz_$$t: the earlier findings in tests/fuzz/regressions pass"; fi; \
	    echo "== fuzz_$$t: $(FUZZ_SECONDS) s, seeds tests/fuzz/seeds/$$t"; \
	    $$([ $$t = dataset ] && echo env ASAN_OPTIONS=detect_leaks=0) build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=$$(case $$t in tokenizer_load|image|video|torchbin) echo 16384;; *) echo 4096;; esac) \
	        -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 -artifact_prefix=build/fuzz/ \
	        build/fuzz/corpus/$$t tests/fuzz/seeds/$$t \
	        >build/fuzz/$$t.log 2>&1; rc=$$?; \
	    grep -E '^#[0-9]+.(DONE|pulse)' build/fuzz/$$t.log | tail -1; grep -E '^stat::(number_of_executed_units|peak_rss)' build/fuzz/$$t.log | tr '\n' ' '; echo; \
	    if [ $$rc -ne 0 ]; then grep -E 'ERROR|SUMMARY|==[0-9]+==' build/fuzz/$$t.log | head -5; echo "fuzz_$$t: FINDING (log build/fuzz/$$t.log)"; exit 1; fi; \
	done

# ---- the book (book/*.c is the weaver, not a chapter library; libc only) -------
BOOK_SRC := $(wildcard book/*.c)
build/book/weaver: $(BOOK_SRC) $(wildcard book/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O2 -g $(WARN) -I. $(BOOK_SRC) -o $@

# @run directives call ./NN_name/run, so the book needs the release build
# and book/figures.sh draws the pictures the pages show from the shipped nano model
book: all build/book/weaver
	@$(MAKE) -s --no-print-directory print-sources > build/book/sources.txt
	bash book/figures.sh build/book/fig
	build/book/weaver --sources build/book/sources.txt --out build/book
book-check: all build/book/weaver
	@$(MAKE) -s --no-print-directory print-sources > build/book/sources.txt
	bash book/figures.sh build/book/fig
	build/book/weaver --sources build/book/sources.txt --check

print-sources:
	@$(foreach c,$(CHAPTERS),echo "$(c): $(call lib_c,$(c)) $(call lib_cu,$(c)) $(wildcard $(c)/run.c)";)

clean:
	rm -rf build 0[1-7]_*/run

-include $(shell find build -name '*.d' 2>/dev/null)
