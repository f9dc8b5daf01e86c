"""Run the F&O emulator standalone: `python -m devtools.fo_emulator --help`."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import Any

import requests

from devtools.fo_emulator.plant import PlantSpec
from devtools.fo_emulator.server import EmulatorConfig, Faults, FoEmulator, Throttle


def _webhook(url: str, ca: str | None) -> Any:
    session = requests.Session()

    def deliver(events: list[dict[str, Any]]) -> None:
        response = session.post(url, json=events, headers={"aeg-event-type": "Notification"}, timeout=30, verify=ca or True)
        response.raise_for_status()

    return deliver


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.fo_emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--orders", type=int, default=300, help="released production orders in the seeded plant")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--page-size", type=int, default=10000)
    parser.add_argument("--token-lifetime", type=int, default=3600, help="seconds")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-tail", type=float, default=0.0, help="Pareto shape for a heavy latency tail (e.g. 2.5)")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of F&O calls answered 503")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="share of F&O calls whose connection is dropped")
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--throttle-rps", type=float, default=0.0, help="resource budget in requests/s (0 = none)")
    parser.add_argument("--throttle-burst", type=float, default=20.0)
    parser.add_argument("--event-sink-url", default="", help="POST business events (Event Grid schema) to this webhook")
    parser.add_argument("--events-as-object", action="store_true", help="send `data` as an object, not a JSON string")
    parser.add_argument(
        "--settings-out",
        type=Path,
        default=Path("emulator.settings.json"),
        help="where to write the app settings that point the bridge at the emulator",
    )
    args = parser.parse_args(argv)

    config = EmulatorConfig(
        port=args.port,
        token_lifetime_s=args.token_lifetime,
        page_size=args.page_size,
        plant=PlantSpec(seed=args.seed, orders=args.orders),
        faults=Faults(
            error_5xx_rate=args.error_rate,
            drop_rate=args.drop_rate,
            slow_rate=args.slow_rate,
            latency_ms=args.latency_ms,
            latency_tail=args.latency_tail,
        ),
        throttle=Throttle(rate_per_s=args.throttle_rps, burst=args.throttle_burst),
        seed=args.seed,
    )
    emulator = FoEmulator(config).start()
    emulator.app.events.as_object = args.events_as_object
    if args.event_sink_url:
        emulator.subscribe(_webhook(args.event_sink_url, None))
    args.settings_out.write_text(json.dumps({"IsEncrypted": False, "Values": emulator.bridge_settings()}, indent=2))
    args.settings_out.chmod(0o600)
    print(f"F&O emulator    {emulator.base_url}   (company USMF, {args.orders} released production orders)")
    print(f"Entra authority {emulator.base_url}/{config.tenant_id}")
    print(f"CA certificate  {emulator.ca_path}")
    print(f"Inspection      {emulator.base_url}/emulator/state  /emulator/stats")
    print(f"App settings    {args.settings_out}  (client id, secret, CA bundle for the bridge)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    emulator.stop()


if __name__ == "__main__":
    main()
