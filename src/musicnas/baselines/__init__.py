"""Honest baselines: a hand-designed music CNN, a log-mel statistics floor, and the benchmark harness."""
