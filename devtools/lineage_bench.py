"""How fast is a lineage question on a plant-sized history? `python -m devtools.lineage_bench`
generates a year of production (orders consuming raw batches and, sometimes, other orders'
finished batches), writes its genealogy to Azurite, and times upstream and downstream queries."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.azurite import Azurite
from shared.store.lineage import Edge, Lineage
from shared.store.tables import connect, table


def generate_year(days: int, orders_per_day: int, seed: int) -> tuple[list[Edge], list[tuple[str, str]], list[tuple[str, str]]]:
    """Edges, finished batches and raw batches of `days` of production."""
    rng = random.Random(seed)
    raw = [
        (f"RM-{i:04d}", f"B{i:04d}-{d:03d}") for i in range(1, 41) for d in range(1, days // 7 + 2)
    ]  # a new lot per item each week
    finished: list[tuple[str, str]] = []
    edges: list[Edge] = []
    for day in range(days):
        for n in range(orders_per_day):
            order = f"P{day:03d}{n:02d}"
            inputs = rng.sample(raw[: (day // 7 + 1) * 40], 3)
            if finished and rng.random() < 0.2:  # rework or sub-assembly: a finished batch goes into another order
                inputs.append(rng.choice(finished[-200:]))
            for item, batch in inputs:
                edges.append(Edge("USMF", order, "consumed", item, batch, round(rng.uniform(0.5, 5), 2), f"{order}-c-{batch}"))
            product = (f"FG-{rng.randint(1, 20):04d}", f"F{day:03d}{n:02d}")
            edges.append(Edge("USMF", order, "produced", product[0], product[1], float(rng.choice([10, 20, 50])), f"{order}-p"))
            finished.append(product)
    return edges, finished, raw


def count_nodes(tree: dict[str, Any], key: str) -> int:
    return 1 + sum(count_nodes(child, key) for order in tree["orders"] for child in order[key])


@dataclass(frozen=True)
class Answer:
    """One timed query and the tree it returned (a test checks the trees against the generated history)."""

    direction: str  # "upstream" or "downstream"
    ref: tuple[str, str]
    depth: int
    tree: dict[str, Any]


@dataclass(frozen=True)
class Measured:
    report: str
    answers: list[Answer]


def measure(
    lineage: Lineage, refs: list[tuple[str, str]], direction: str, depth: int
) -> tuple[float, float, float, list[Answer]]:
    query: Callable[..., dict[str, Any]] = lineage.upstream if direction == "upstream" else lineage.downstream
    key = "consumed" if direction == "upstream" else "produced"
    timings, sizes, answers = [], [], []
    for ref in refs:
        started = time.perf_counter()
        tree = query("USMF", ref[0], ref[1], depth=depth)
        timings.append((time.perf_counter() - started) * 1000)
        sizes.append(count_nodes(tree, key))
        answers.append(Answer(direction, ref, depth, tree))
    return statistics.median(timings), max(timings), statistics.mean(sizes), answers


def run(days: int, orders_per_day: int, samples: int, seed: int, connection_string: str) -> Measured:
    lineage = Lineage(table(connect(connection_string), f"lineage{seed}x{days}"))
    edges, finished, raw = generate_year(days, orders_per_day, seed)
    started = time.perf_counter()
    lineage.record(edges)
    written = time.perf_counter() - started
    rng = random.Random(seed + 1)
    up_median, up_max, up_nodes, up = measure(lineage, rng.sample(finished, samples), "upstream", 5)
    down_median, down_max, down_nodes, down = measure(lineage, rng.sample(raw[:200], samples), "downstream", 3)
    orders = days * orders_per_day
    report = (
        f"Lineage over {days} days: {orders} production orders, {len(edges)} edges ({2 * len(edges)} rows), written in {written:.1f} s.\n"
        f"- upstream (which batches went into finished batch X, depth 5): median {up_median:.0f} ms, max {up_max:.0f} ms, {up_nodes:.1f} batches per answer\n"
        f"- downstream (where did raw batch Y go, depth 3): median {down_median:.0f} ms, max {down_max:.0f} ms, {down_nodes:.1f} batches per answer\n"
        f"({samples} queries each, Azurite on this machine; `python -m devtools.lineage_bench --days {days} --orders-per-day {orders_per_day}`)"
    )
    return Measured(report, up + down)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--orders-per-day", type=int, default=4)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    with Azurite() as azurite:
        print(run(args.days, args.orders_per_day, args.samples, args.seed, azurite.connection_string).report)


if __name__ == "__main__":
    main()
