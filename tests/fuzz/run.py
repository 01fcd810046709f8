"""``make fuzz``: the long fuzz pass, for a set number of minutes.

    python -m tests.fuzz.run [--minutes 10] [--atheris-share 0.25]

Runs the hypothesis targets of ``tests/fuzz`` (the tar reader and applier,
the filter language, the live daemon's request decoding, the HTTP/2 frame
parser, the small parsers) with ``FUZZ_SECONDS`` set, then, when atheris
imports, the coverage-guided targets of :mod:`tests.fuzz.atheris_fuzz` for
their share of the time.  At
the end it prints the inputs each target tried and exits non-zero if any
target found something; findings are in pytest's output (with the input,
and ``@reproduce_failure`` to replay it) and, for atheris, in the crash
artifacts whose paths it prints.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ATHERIS_TARGETS = ["tar-reader", "filters", "tar-apply", "manifests", "small-parsers"]
#: Seconds the hypothesis pass spends beyond its targets' budgets (collection,
#: starting the daemon, the last round of each target).
HYPOTHESIS_OVERHEAD = 20
#: The atheris share, split by these weights.
ATHERIS_WEIGHTS = {
    "tar-reader": 3,
    "filters": 3,
    "tar-apply": 2,
    "manifests": 1,
    "small-parsers": 1,
}


def run_hypothesis(seconds: float, report: Path) -> int:
    env = {**os.environ, "FUZZ_SECONDS": str(int(seconds)), "FUZZ_REPORT": str(report)}
    command = [sys.executable, "-m", "pytest", "-q", "tests/fuzz", "-p", "no:cacheprovider"]
    print(f"== hypothesis: {' '.join(command[2:])} with FUZZ_SECONDS={int(seconds)}", flush=True)
    return subprocess.run(command, cwd=REPO, env=env, check=False).returncode


def run_atheris(target: str, seconds: float, work: Path) -> tuple[int, int, list[Path]]:
    """(exit status, inputs tried, crash artifacts) of one atheris target."""
    corpus = work / f"corpus-{target}"
    artifacts = work / f"artifacts-{target}"
    artifacts.mkdir()
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.atheris_fuzz",
        target,
        f"-max_total_time={max(int(seconds), 1)}",
        "-timeout=10",  # one input for 10 s is a hang
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    print(f"== atheris {target}: {int(seconds)}s", flush=True)
    env = {**os.environ, "FUZZ_WORKDIR": str(work)}
    proc = subprocess.run(
        command, cwd=REPO, env=env, check=False, capture_output=True, text=True, errors="replace"
    )
    runs = 0
    for line in proc.stderr.splitlines():
        if m := re.match(r"Done (\d+) runs", line) or re.match(
            r"stat::number_of_executed_units: (\d+)", line
        ):
            runs = max(runs, int(m.group(1)))
    if proc.returncode != 0:
        print(proc.stderr[-6000:], file=sys.stderr)
    return proc.returncode, runs, sorted(artifacts.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("FUZZ_MINUTES", 10)))
    parser.add_argument("--atheris-share", type=float, default=0.25)
    args = parser.parse_args()
    total = args.minutes * 60
    have_atheris = importlib.util.find_spec("atheris") is not None
    if not have_atheris:
        print("atheris is not installed (pip install -e '.[fuzz]'): hypothesis gets all the time")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pycontainerd-fuzz-"))
    failed: list[str] = []
    counts: dict[str, int] = {}
    try:
        share = args.atheris_share if have_atheris else 0.0
        report = work / "hypothesis.json"
        if run_hypothesis(max(total * (1 - share) - HYPOTHESIS_OVERHEAD, 30), report) != 0:
            failed.append("hypothesis (see pytest's output above)")
        if report.exists():
            counts.update({f"hypothesis {k}": v for k, v in json.loads(report.read_text()).items()})
        if have_atheris:
            left = max(total - (time.monotonic() - started), 0.0)
            weights = sum(ATHERIS_WEIGHTS.values())
            for target in ATHERIS_TARGETS:
                seconds = max(left * ATHERIS_WEIGHTS[target] / weights, 5)
                status, runs, crashes = run_atheris(target, seconds, work)
                counts[f"atheris {target}"] = runs
                if status != 0 or crashes:
                    kept = Path(tempfile.mkdtemp(prefix=f"fuzz-crash-{target}-"))
                    for crash in crashes:
                        shutil.copy(crash, kept)
                    failed.append(f"atheris {target} (exit {status}; inputs kept in {kept})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(f"\n== fuzz pass: {elapsed / 60:.1f} minutes; inputs tried per target")
    for name, n in sorted(counts.items()):
        print(f"   {name:36} {n:>10}")
    print(f"   {'total':36} {sum(counts.values()):>10}")
    if failed:
        print("FOUND:\n  " + "\n  ".join(failed))
        return 1
    print("no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
