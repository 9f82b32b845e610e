// bench.h: how fast is this CPU, and how close to that does our GEMM get?
//
// `./01_tensor/run bench` answers two questions, in this order:
//   1. What is the most fp32 arithmetic this CPU can do? A loop of independent
//      vector fused multiply-adds with nothing else in it, on 1, 2, ... threads.
//      Nothing real runs faster, so it is the yardstick for everything else.
//   2. How many of those flops does sgemm_cpu deliver on the shapes that matter
//      (square matrices, and a transformer's Linear layer, forward and
//      backward)? Reported in GFLOP/s and as a percentage of (1).
// `make bench` runs it next to PyTorch (tests/reference/bench.py). Benchmarks
// only measure; nothing here passes or fails.
#ifndef NM_BENCH_H
#define NM_BENCH_H

// The `bench` subcommand. argv[0] is the subcommand's name; the options are
//   --threads N     OpenMP threads (default: the run context's, i.e. all cores)
//   --json          one JSON object on stdout instead of the table
//   --sizes LIST    comma-separated GEMM sizes, each S (for S x S x S) or MxKxN;
//                   default 256,1024,2048,4096x1024x1024
//   --reps N        timed repetitions per size, the best one counts (default 5)
//   --quick         one small size, two repetitions (the tour's)
//   --device cpu    the only device it measures; cuda is an error
// Returns the process exit code.
int bench_main(int argc, char **argv);

// Peak fp32 GFLOP/s of `threads` threads running only fused multiply-adds
// (best of 5 tries of 50 ms each).
double bench_peak_gflops(int threads);

#endif
