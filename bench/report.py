"""Print results as a table; turn them into JSON."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any, TextIO

from bench.runner import OURS, THEIRS, Result, Stats

__all__ = ["environment", "print_results", "to_json"]


def fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def _table(rows: list[list[str]], out: TextIO, indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write(indent + "  ".join(cells).rstrip() + "\n")


def _block(result: Result, out: TextIO) -> None:
    sc = result.scenario
    n = len(result.samples[OURS])
    out.write(f"\n{sc.name}: {sc.summary}\n")
    theirs = sc.versus or THEIRS
    out.write(f"  {n} rounds each, alternating {OURS} / {theirs}\n\n")
    rows = [["daemon", "median", "min", "max", f"per {sc.unit}", "server CPU/round"]]
    for daemon in (OURS, THEIRS):
        wall: Stats = result.wall(daemon)
        rows.append(
            [
                theirs if daemon == THEIRS else daemon,
                fmt_seconds(wall.median),
                fmt_seconds(wall.min),
                fmt_seconds(wall.max),
                fmt_seconds(wall.median / sc.ops),
                fmt_seconds(result.cpu(daemon).median),
            ]
        )
    _table(rows, out)
    out.write(
        f"\n  ratio {OURS}/{theirs}: {fmt_ratio(result.ratio_pairwise)} (median of pairwise), "
        f"{fmt_ratio(result.ratio_of_medians)} (ratio of medians); "
        f"server CPU {fmt_ratio(result.cpu_ratio_of_medians)}\n"
    )
    names = result.metric_names()
    if names:
        out.write("\n")
        rows = [["after a round (median)", OURS, THEIRS, "ratio"]]
        for name in names:
            ours, theirs = result.metric(OURS, name), result.metric(THEIRS, name)
            ratio = ours.median / theirs.median if ours and theirs and theirs.median else None
            rows.append(
                [
                    name,
                    f"{ours.median:.1f}" if ours else "-",
                    f"{theirs.median:.1f}" if theirs else "-",
                    fmt_ratio(ratio),
                ]
            )
        _table(rows, out)


def print_results(results: list[Result], out: TextIO) -> None:
    for result in results:
        _block(result, out)
    if len(results) > 1:
        out.write("\nsummary (wall time per round, ratio = ours/containerd)\n\n")
        rows = [["scenario", OURS, THEIRS, "ratio (pairwise)", "ratio (medians)"]]
        for r in results:
            rows.append(
                [
                    r.scenario.name,
                    fmt_seconds(r.wall(OURS).median),
                    fmt_seconds(r.wall(THEIRS).median),
                    fmt_ratio(r.ratio_pairwise),
                    fmt_ratio(r.ratio_of_medians),
                ]
            )
        _table(rows, out)
    out.write("\n")


def _stats(s: Stats) -> dict[str, float]:
    return {"median": s.median, "min": s.min, "max": s.max}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    try:
        ctd = subprocess.run(
            ["containerd", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        ctd = None
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "pycontainerd": _version("pycontainerd"),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "containerd": ctd,
    }


def to_json(
    results: list[Result], rounds: int, warmup: int, failures: dict[str, str]
) -> dict[str, Any]:
    scenarios = []
    for r in results:
        sc = r.scenario
        entry: dict[str, Any] = {
            "name": sc.name,
            "summary": sc.summary,
            "ops_per_round": sc.ops,
            "rounds": len(r.samples[OURS]),
            "unit": sc.unit,
            "ratio_pairwise": r.ratio_pairwise,
            "ratio_of_medians": r.ratio_of_medians,
            "server_cpu_ratio_of_medians": r.cpu_ratio_of_medians,
        }
        for daemon in (OURS, THEIRS):
            entry[daemon] = {
                "wall_seconds": _stats(r.wall(daemon)),
                "server_cpu_seconds": _stats(r.cpu(daemon)),
                "per_op_seconds": r.wall(daemon).median / sc.ops,
                "rounds": [
                    {"wall_seconds": s.wall, "server_cpu_seconds": s.server_cpu, **s.metrics}
                    for s in r.samples[daemon]
                ],
            }
        scenarios.append(entry)
    return {
        "schema": 1,
        "environment": environment(),
        "rounds": rounds,
        "warmup": warmup,
        "scenarios": scenarios,
        "failures": failures,
    }
