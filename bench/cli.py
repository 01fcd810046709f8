"""``python -m bench [SCENARIO ...] [--rounds N] [--warmup N] [--json [FILE]] [--list]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence

from bench import registry
from bench.report import print_results, to_json
from bench.runner import Result, run_scenario

__all__ = ["DEFAULT_ROUNDS", "main"]

DEFAULT_ROUNDS = 7


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run scenarios against pycontainerd and Debian's containerd side by side "
        "and print the ratio ours/containerd.",
    )
    p.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help="scenarios to run (default: all)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        help=f"measured rounds per daemon (default {DEFAULT_ROUNDS}, fewer for a few long "
        "scenarios: see --list)",
    )
    p.add_argument(
        "--warmup", type=int, default=1, help="untimed rounds per daemon first (default 1)"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="also write results as JSON to FILE; without FILE, JSON goes to stdout "
        "and the table to stderr",
    )
    p.add_argument("--list", action="store_true", help="list scenarios and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for sc in registry.all_scenarios():
            rounds = f"{sc.rounds} rounds" if sc.rounds else ""
            print(f"{sc.name:24} {rounds:10} {sc.summary}")
        return 0
    if (args.rounds is not None and args.rounds < 1) or args.warmup < 0:
        print("bench: --rounds must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    try:
        selected = (
            [registry.get(n) for n in args.scenarios]
            if args.scenarios
            else registry.all_scenarios()
        )
    except KeyError as exc:
        print(f"bench: {exc.args[0]}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench: needs root (containerd runs on private paths but as root)", file=sys.stderr)
        return 2

    table_out = sys.stderr if args.json == "-" else sys.stdout
    results: list[Result] = []
    failures: dict[str, str] = {}
    for sc in selected:
        try:
            rounds = args.rounds or sc.rounds or DEFAULT_ROUNDS
            results.append(
                run_scenario(
                    sc, rounds, args.warmup, lambda m: print(m, file=sys.stderr, flush=True)
                )
            )
        except Exception as exc:
            traceback.print_exc()
            failures[sc.name] = f"{type(exc).__name__}: {exc}"
            print(f"bench: scenario {sc.name} failed: {exc}", file=sys.stderr)

    print_results(results, table_out)
    if args.json is not None:
        doc = json.dumps(
            to_json(results, args.rounds or DEFAULT_ROUNDS, args.warmup, failures), indent=2
        )
        if args.json == "-":
            print(doc)
        else:
            with open(args.json, "w") as f:
                f.write(doc + "\n")
            print(f"results written to {args.json}", file=table_out)
    return 1 if failures else 0
