"""Side-by-side benchmarks: pycontainerd against Debian's containerd.

Run ``python -m bench`` from the repository root (``make bench``); see
``bench/README.md``.  Scenarios live in :mod:`bench.scenarios` and register
themselves with :func:`bench.registry.scenario`.
"""
