"""The project's benchmarks; run them from the repository root (``python -m benchmarks.<name>``) so that they
can share their definitions (``bench_gpu`` reuses the kernel shapes of ``bench_msda``)."""
