"""Benchmarks of the consumer against the real stack (not tests: nothing here is timed in CI).

``python -m bench`` (bench/suite.py) runs every part and writes the run's summary; see
bench/README.md. What the figures mean is written by hand in docs/benchmarks.md.
"""
