"""`python -m devtools.azurite_cost [--profile]`: what one steady-path event costs Azurite, by the size
of the partition it writes to.

The bench's Table Storage time is Azurite's: one Node.js thread on the same 2 cores as the bridge.
Azurite keeps a table in LokiJS, and every row a call names is found with `findOne({PartitionKey,
RowKey})`, which uses the PartitionKey index and then compares the RowKey of every row of that
partition (lokijs `Resultset.findAnd`: "only the first filter can utilize a binary index"). The
ledger table keeps a company's rows in one partition (shared/store/ledger.py, `ledger_partition`),
about 4 rows per consumption forwarded, so on Azurite each call costs more as the company's history
grows. Table Storage serves a row by PartitionKey and RowKey from its index whatever the partition's size.

The events here have the steady path's shape, as the bench's consumption events write it: the claim
(the ledger row created, about 1.1 KB, with the order's progress row, one transaction) and the forward
(the ledger row, the progress row, the content index row and both genealogy rows, one transaction).
Printed: Azurite's CPU per event (from /proc) and the wall time per event, one event at a time, at
growing sizes of the company's partition, then the same events spread over one partition per order.
`--profile` runs Azurite under `node --cpu-prof` and prints where its CPU went.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.azurite import Azurite
from shared.store import tables
from shared.store.table_rest import Table

ORDERS = 40


def _azurite_cpu(azurite: Azurite) -> float:
    spent = azurite.cpu_s()
    if spent is None:
        raise RuntimeError("Azurite's CPU time is read from /proc: Linux only")
    return spent


def _row(partition: str, key: str, size: int) -> dict[str, Any]:
    return {"PartitionKey": partition, "RowKey": key, "State": "Forwarded", "Text": "x" * size, "Attempts": 1}


def event(table: Table, partition: str, n: int) -> None:
    """One steady-path event's two transactions (row sizes as the bench's consumption events write them)."""
    table.submit_transaction([("create", _row(partition, f"m{n}", 1000)), ("upsert", _row(partition, "progress", 150))])
    table.submit_transaction(
        [
            ("upsert", _row(partition, f"m{n}", 900)),
            ("upsert", _row(partition, "progress", 150)),
            ("upsert", _row(partition, f"~index~{n}", 150)),
            ("upsert", _row(partition, f"~lineage~node~{n}", 250)),
            ("upsert", _row(partition, f"~lineage~batch~{n}", 250)),
        ]
    )


def measure(sizes: list[int], events: int, azurite: Azurite) -> list[tuple[str, float, float]]:
    table = tables.table(tables.connect(azurite.connection_string), "azuritecost")
    n = 0

    def timed(partition: Callable[[int], str]) -> tuple[float, float]:
        """`events` more events, to the partition `partition(k)` names: Azurite CPU and wall ms per event."""
        nonlocal n
        cpu, wall = _azurite_cpu(azurite), time.perf_counter()
        for k in range(events):
            event(table, partition(k), n)
            n += 1
        return (_azurite_cpu(azurite) - cpu) * 1000 / events, (time.perf_counter() - wall) * 1000 / events

    figures = []
    for size in sizes:
        while 4 * n < size:  # about 4 rows per event stay in the partition
            event(table, "USMF", n)
            n += 1
        cpu, wall = timed(lambda _: "USMF")
        figures.append((f"one partition of {4 * n:,} rows", cpu, wall))
    cpu, wall = timed(lambda k: f"USMF|P{k % ORDERS:06d}")
    figures.append((f"{ORDERS} partitions (one per order) of the same table", cpu, wall))
    return figures


def hottest(profile: Path, top: int = 12) -> list[tuple[float, str]]:
    """The functions with the most self time in a V8 CPU profile, as shares of Azurite's busy time."""
    document = json.loads(profile.read_text())
    nodes = {node["id"]: node for node in document["nodes"]}
    spent: collections.Counter[str] = collections.Counter()
    for node_id, delta in zip(document["samples"], document["timeDeltas"], strict=False):
        frame = nodes[node_id]["callFrame"]
        spent[
            f"{frame['functionName'] or '(anonymous)'} {frame['url'].rsplit('node_modules/', 1)[-1]}:{frame['lineNumber']}"
        ] += delta
    busy = sum(v for k, v in spent.items() if not k.startswith("(idle)"))
    return [(v / busy, k) for k, v in spent.most_common(top + 1) if not k.startswith("(idle)")][:top]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.azurite_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="events measured at each size")
    parser.add_argument("--sizes", default="500,2000,4000,8000", help="rows in the company's partition, comma-separated")
    parser.add_argument(
        "--profile", action="store_true", help="run Azurite under node --cpu-prof and print its hottest functions"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        options = ("--cpu-prof", f"--cpu-prof-dir={folder}") if args.profile else ()
        with Azurite(node_options=options) as azurite:
            figures = measure([int(s) for s in args.sizes.split(",")], args.events, azurite)
        print("| where the event's rows go | Azurite CPU ms per event | wall ms per event (one at a time) |")
        print("|---|---|---|")
        for where, cpu, wall in figures:
            print(f"| {where} | {cpu:.2f} | {wall:.2f} |")
        if args.profile:
            print("\nAzurite's busy time by function (self time):")
            for share, where in hottest(next(Path(folder).glob("*.cpuprofile"))):
                print(f"  {share:6.1%}  {where}")


if __name__ == "__main__":
    main()
