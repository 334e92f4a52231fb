"""Throughput benchmarks (`make bench`): figures and ratios, never pass/fail timings."""
