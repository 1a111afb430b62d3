"""Command line: ``python -m flow all`` rebuilds the committed artifacts, ``generate`` bigger bundles."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from flow import constants as c
from flow.artifacts import REPO_ROOT, write_all, write_bundles
from flow.population import generate_population


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    everything = commands.add_parser("all", help="bundles for both services, the model and its card")
    everything.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root to write under")
    generate = commands.add_parser("generate", help="demographics.npz and behavior.npz only")
    generate.add_argument("--out", type=Path, required=True, help="folder to write the two bundles in")
    for command in (everything, generate):
        command.add_argument("--customers", type=_customer_count, default=c.DEFAULT_CUSTOMERS)
        command.add_argument("--seed", type=int, default=c.SEED)
    return parser


def _customer_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= c.MAX_CUSTOMERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {c.MAX_CUSTOMERS} (ids are C + 7 digits)")
    return count


def _report(paths: Sequence[Path], started: float) -> None:
    for path in paths:
        print(f"{path.stat().st_size:>12,d}  {path}")
    print(f"done in {time.perf_counter() - started:.1f}s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    population = generate_population(args.customers, args.seed)
    if args.command == "generate":
        _report(write_bundles(population, args.out), started)
        return 0
    # Imported here so `generate` works without the training stack installed.
    from flow.train import GENERATIONS, train

    models = {generation: train(population, args.seed, generation) for generation in GENERATIONS}
    written = write_all(population, models, args.root)
    _report(written, started)
    for generation, model in models.items():
        print(f"generation {generation}: holdout AUC {model.card['metrics']['holdout_auc']}", file=sys.stderr)
    return 0
