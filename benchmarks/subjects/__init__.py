"""Benchmark subjects: one script per scheduler, each run in a fresh process by ``run.py``."""
