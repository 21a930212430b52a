"""Benchmarks: each stage against a ceiling measured in the same run."""
