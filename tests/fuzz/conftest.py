"""The fuzz pass: its marker, and the count of inputs each target tried."""

from __future__ import annotations

import json
import os

import pytest

from tests.fuzz import _harness


def pytest_configure(config: pytest.Config) -> None:
    # Declared here, beside the only tests that use it, so the marker
    # travels with the directory.
    config.addinivalue_line(
        "markers", "fuzz: property-based fuzzing (short pass by default; FUZZ_SECONDS for long)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _harness.LONG:
        return
    # A long-pass target runs for its share of FUZZ_SECONDS, plus a last
    # round and the shrinking of what it found: more than the suite's
    # per-test timeout allows.
    limit = pytest.mark.timeout(_harness.FUZZ_SECONDS + 900)
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(limit)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _harness.COUNTS:
        return
    mode = f"long pass, {_harness.FUZZ_SECONDS:.0f}s" if _harness.LONG else "short pass"
    terminalreporter.section(f"fuzz inputs tried ({mode})")
    for target, count in sorted(_harness.COUNTS.items()):
        terminalreporter.write_line(f"{target:24} {count:>10}")
    terminalreporter.write_line(f"{'total':24} {sum(_harness.COUNTS.values()):>10}")
    for note in _harness.NOTES:
        terminalreporter.write_line(note)
    report = os.environ.get("FUZZ_REPORT")
    if report:
        with open(report, "w", encoding="utf-8") as f:
            json.dump(dict(_harness.COUNTS), f, indent=1, sort_keys=True)
