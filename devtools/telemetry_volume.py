"""`make telemetry-volume`: what one MES message costs in Application Insights.

Runs the demo shift (Azurite, the F&O emulator, the real functions) and counts, per settled MES
message, what the deployed app turns into telemetry items:
- log records the worker exports (the bridge's `mesbridge` lines at INFO, anything else at WARNING+),
  with the size of their message and attributes (customDimensions);
- outgoing HTTP calls (F&O, Entra, Table Storage): each becomes a dependency span.
The Functions host adds, per invocation, one request and its "Executing"/"Executed" log lines
(host.json logLevel "Function": "Information"); those are counted from the settled deliveries.
Then it prints the ingestion per million MES messages with and without span sampling, using the
envelope sizes and the price given on the command line (see README "Telemetry cost").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from devtools import demo
from shared.store.table_rest import Endpoint

# Bytes an Application Insights item carries besides its message and custom dimensions (time,
# operation ids, cloud role and instance, SDK version, item type); an estimate, see the README.
ENVELOPE_BYTES = 600


class Items(logging.Handler):
    """Log records as the worker would export them, with the bytes of their message and attributes."""

    _STANDARD: ClassVar[set[str]] = set(vars(logging.makeLogRecord({})))

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records = 0
        self.bytes = 0
        self.deliveries = 0  # invocations: one outcome line per Service Bus delivery, one line per Event Grid event
        self.settled: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if not (record.name.startswith("mesbridge") or record.levelno >= logging.WARNING):
            return
        extra = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        if "event_grid_id" in extra and "received Event Grid event" in record.getMessage():
            self.deliveries += 1  # one Event Grid invocation
        if "outcome" in extra and "mes_message_id" in extra:
            self.deliveries += 1
            if extra["outcome"] in ("forwarded", "duplicate", "parked"):
                self.settled.add(str(extra["mes_message_id"]))
        self.records += 1
        self.bytes += ENVELOPE_BYTES + len(record.getMessage()) + sum(len(k) + len(str(v)) for k, v in extra.items())


class Calls:
    """Every outgoing HTTP request: requests carries msal's and F&O's, shared/store/table_rest.py Table Storage's."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._send = requests.Session.send
        self._table_send = Endpoint.send

    def __enter__(self) -> Calls:
        calls = self

        def counting(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            path = urlsplit(request.url or "").path
            kind = "tables" if "devstoreaccount1" in path else "entra" if "oauth2" in path or "token" in path else "fo"
            with calls._lock:
                calls.by_kind[kind] += 1
            return calls._send(session, request, **kwargs)

        def counting_tables(endpoint: Endpoint, *args: Any, **kwargs: Any) -> Any:
            with calls._lock:
                calls.by_kind["tables"] += 1
            return calls._table_send(endpoint, *args, **kwargs)

        requests.Session.send = counting  # type: ignore[method-assign,assignment]
        Endpoint.send = counting_tables  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *_: object) -> None:
        requests.Session.send = self._send  # type: ignore[method-assign]
        Endpoint.send = self._table_send  # type: ignore[method-assign]


def per_million(items_bytes: float, price_per_gb: float) -> tuple[float, float]:
    """(GB, price) for a million messages whose telemetry is `items_bytes` each."""
    gb = items_bytes * 1_000_000 / 1e9
    return gb, gb * price_per_gb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.telemetry_volume", description=__doc__)
    parser.add_argument("--orders", type=int, default=12)
    parser.add_argument("--sampling", type=float, default=0.1, help="OTEL_TRACES_SAMPLER_ARG: share of spans kept")
    parser.add_argument("--price-per-gb", type=float, default=2.30, help="Log Analytics Analytics-logs pay-as-you-go price, USD")
    parser.add_argument("--request-bytes", type=int, default=ENVELOPE_BYTES + 300, help="host request item")
    parser.add_argument("--host-log-bytes", type=int, default=ENVELOPE_BYTES + 150, help="host Executing/Executed line")
    parser.add_argument("--dependency-bytes", type=int, default=ENVELOPE_BYTES + 400, help="dependency span (URL, target)")
    args = parser.parse_args(argv)

    items = Items()
    root = logging.getLogger()
    root.addHandler(items)
    previous = root.level
    root.setLevel(logging.INFO)
    shift = demo.build_parser().parse_args(
        ["--orders", str(args.orders), "--pace", "0", "--throttle-burst", "0", "--log", "telemetry_volume.log"]
    )
    try:
        with Calls() as calls, open("/dev/null", "w") as quiet:
            code = demo.run(shift, out=quiet)
    finally:
        root.removeHandler(items)
        root.setLevel(previous)
    if code != 0:
        print("the demo shift did not settle; no figures", file=sys.stderr)
        return code

    messages = max(1, len(items.settled))
    per_message = {
        # Waits and retries add deliveries, F&O's business events come back to three functions:
        # each invocation is one host request.
        "invocations (host requests)": items.deliveries / messages,
        "log records (worker)": items.records / messages,
        "HTTP calls = dependency spans": sum(calls.by_kind.values()) / messages,
        **{f"  of which {kind}": n / messages for kind, n in sorted(calls.by_kind.items())},
    }
    log_bytes = items.bytes / messages
    # The host's "Executing"/"Executed" lines per invocation exist only at "Function": "Information".
    levels = json.loads((Path(__file__).resolve().parents[1] / "host.json").read_text())["logging"]["logLevel"]
    host_lines = 2 if levels.get("Function", levels.get("default")) in ("Trace", "Debug", "Information") else 0
    host_bytes = per_message["invocations (host requests)"] * (args.request_bytes + host_lines * args.host_log_bytes)
    span_bytes = per_message["HTTP calls = dependency spans"] * args.dependency_bytes
    print(f"demo shift: {messages} MES messages settled; per message:")
    for name, value in per_message.items():
        print(f"  {name:34} {value:6.2f}")
    print(f"  {'worker log bytes':34} {log_bytes:6.0f}")
    print(f"  {'host bytes (requests, ' + str(host_lines) + ' lines each)':34} {host_bytes:6.0f}")
    print(f"  {'dependency span bytes':34} {span_bytes:6.0f}")
    for label, ratio in (("no sampling", 1.0), (f"spans sampled at {args.sampling:g}", args.sampling)):
        total = log_bytes + host_bytes + span_bytes * ratio
        gb, price = per_million(total, args.price_per_gb)
        print(f"{label:28} {total:6.0f} B/message -> {gb:5.2f} GB and ${price:6.2f} per million messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
