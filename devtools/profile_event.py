"""`python -m devtools.profile_event`: where the CPU of one inbound event goes.

Runs the material_consumed function in this thread (no host, so cProfile sees all of it) for a
few hundred in-order events against Azurite and the F&O emulator (its own process), and prints
the CPU by library, then the heaviest functions. The floor of `make bench` is the comparison.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from azure.functions.servicebus import ServiceBusMessage

from devtools import mes
from devtools.azurite import Azurite
from devtools.bench import Emulator, production_telemetry
from functions import material_consumed, production_started
from shared import runtime
from shared.settings import load_settings

BUCKETS = [
    ("azure-core pipeline and azure-data-tables", ("azure/core", "azure/data")),
    ("telemetry (OpenTelemetry, Azure Monitor)", ("opentelemetry", "azure/monitor")),
    ("http.client, ssl, socket", ("http/client", "ssl.py", "socket.py", "<method 'read' of '_ssl", "<method 'write' of '_ssl")),
    ("urllib3 and requests", ("urllib3", "requests")),
    ("email (multipart answers of transactions)", ("email/",)),
    ("concurrent.futures, threading", ("concurrent/futures", "threading.py")),
    ("pydantic", ("pydantic",)),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("the bridge (shared/, functions/)", ("/shared/", "/functions/")),
]


def trigger(document: dict[str, Any]) -> ServiceBusMessage:
    return ServiceBusMessage(
        body=mes.encode(document),
        message_id=uuid.uuid4().hex,
        session_id=document["production_order"],
        delivery_count=1,
        enqueued_time_utc=datetime.now(UTC),
        application_properties={},
        user_properties={},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.profile_event", description=__doc__)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--telemetry", action="store_true", help="with production telemetry (exporter stubbed)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--callers", default="", help="also print who calls the functions matching this")
    parser.add_argument("--callees", default="", help="also print what the functions matching this call")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no profiler: the process's CPU per event (every thread, the exporter's included)",
    )
    args = parser.parse_args(argv)
    if args.telemetry:
        production_telemetry()
    orders = 20
    with Azurite() as azurite:
        emulator = Emulator(0, 0, orders)
        try:
            values = {**emulator.values, "TABLES_CONNECTION_STRING": azurite.connection_string, "TABLES_PREFIX": "prof"}
            runtime.install(runtime.build(load_settings(values)))
            numbers = [f"P{n:06d}" for n in range(1, orders + 1)]
            for order in numbers:
                production_started.production_started(trigger(mes.event("production_started", order, {}, sequence=1)))
            line = {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-001", "quantity": 1.0}]}
            events = [
                mes.event("material_consumed", numbers[n % orders], line, sequence=2 + n // orders) for n in range(args.events)
            ]
            material_consumed.material_consumed(trigger(events.pop(0)))  # warm: pools, token, caches
            profile = cProfile.Profile(time.process_time)  # CPU, not waiting
            cpu = time.process_time()
            if not args.plain:
                profile.enable()
            for document in events:
                material_consumed.material_consumed(trigger(document))
            profile.disable()
            cpu = time.process_time() - cpu
        finally:
            runtime.install(None)
            emulator.close()
    if args.plain:
        print(f"{len(events)} material_consumed events in one thread: {cpu * 1000 / len(events):.2f} CPU ms per event (process)")
        return
    stats = pstats.Stats(profile)
    total = sum(own for (_, _, own, _, _) in stats.stats.values())  # type: ignore[attr-defined]
    by_bucket: dict[str, float] = defaultdict(float)
    for (filename, _, name), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename} {name}"
        bucket = next((label for label, marks in BUCKETS if any(m in where for m in marks)), "other (stdlib, builtins)")
        by_bucket[bucket] += own
    count = len(events)
    print(
        f"{count} material_consumed events, profiled in one thread: {total * 1000 / count:.1f} ms per event (profiler included)"
    )
    for bucket, own in sorted(by_bucket.items(), key=lambda item: -item[1]):
        print(f"  {own * 1000 / count:6.2f} ms  {own / total:5.1%}  {bucket}")
    print()
    stats.sort_stats("tottime").print_stats(args.top)
    if args.callers:
        stats.print_callers(args.callers)
    if args.callees:
        stats.sort_stats("cumulative").print_callees(args.callees)


if __name__ == "__main__":
    main()
