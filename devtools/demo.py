"""`make demo`: a simulated plant shift through the real functions, against Azurite and the F&O
emulator, then a summary a plant IT lead can read and a check of F&O's final state."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import function_app
from devtools.azurite import Azurite
from devtools.console_server import ConsoleServer
from devtools.fo_carried import carried
from devtools.fo_emulator import EmulatorConfig, FoEmulator
from devtools.fo_emulator.plant import PlantSpec
from devtools.local_host import InMemoryBroker, LocalHost
from devtools.local_host.broker import BrokerMesPublisher
from devtools.mes import encode
from devtools.operator_cases import seed
from devtools.scenario import Shift, ShiftSpec, build_shift
from shared import runtime
from shared.fo.client import FoClient
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.mapping import MappingOptions
from shared.runtime import Ports
from shared.settings import load_settings
from shared.store import tables
from shared.store.ledger import State
from shared.topology import MES_TOPIC

# The gate's waits keep the shipped GATE_MAX_WAIT_S: a waiting message is resumed by the watermark move
# that ends its wait, not by polling, and the demo's Table operations count every wait.
DEMO_SETTINGS = {
    "GATE_FIRST_WAIT_S": "0.05",
    "GATE_GAP_TIMEOUT_S": "120",
    "RETRY_FIRST_WAIT_S": "0.5",
    "RETRY_MAX_WAIT_S": "2",
    "FO_CALL_DEADLINE_S": "20",
    "FO_BACKOFF_BASE_S": "0.1",
    "FO_BACKOFF_MAX_S": "1",
    "FO_READ_TIMEOUT_S": "10",
}


class Settled(logging.Handler):
    """The MES messages the pipeline settled (forwarded, duplicate, parked), from its outcome log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ids: set[str] = set()

    @property
    def count(self) -> int:
        return len(self.ids)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "outcome", None) in ("forwarded", "duplicate", "parked") and getattr(record, "mes_message_id", None):
            self.ids.add(str(getattr(record, "mes_message_id", "")))


class Progress:
    def __init__(self, out: Any, total: int) -> None:
        self.out, self.total = out, total
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.shown = -1
        self.last = 0.0

    def show(self, done: int, final: bool = False) -> None:
        done = min(done, self.total)
        if self.tty and (final or time.monotonic() - self.last > 0.2):
            self.out.write("\r  MES -> bridge -> F&O " + _bar(done, self.total) + ("\n" if final else ""))
            self.out.flush()
            self.last = time.monotonic()
        elif not self.tty and (final or done * 10 // self.total > self.shown):
            self.shown = done * 10 // self.total
            self.out.write(f"  MES -> bridge -> F&O {_bar(done, self.total)}\n")
            self.out.flush()


def _bar(done: int, total: int, width: int = 40) -> str:
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    log_path = Path(args.log)
    # The demo's own handlers (pytest or a caller may have configured the root logger already).
    file_handler = logging.FileHandler(log_path, mode="w")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    settled = Settled()
    bridge_log = logging.getLogger("mesbridge")
    bridge_log.setLevel(logging.INFO)
    for handler in (file_handler, settled):
        bridge_log.addHandler(handler)
    try:
        return _run(args, out, say, log_path, settled)
    finally:
        for handler in (file_handler, settled):
            bridge_log.removeHandler(handler)
        file_handler.close()


def _run(args: argparse.Namespace, out: Any, say: Any, log_path: Path, settled: Settled) -> int:
    spec = ShiftSpec(
        seed=args.seed,
        orders=args.orders,
        duplicate_rate=args.duplicate_rate,
        malformed=args.malformed,
        inventory_moves=args.moves,
        inventory_adjustments=args.adjustments,
        quality_samples=args.quality,
    )
    config = EmulatorConfig(plant=PlantSpec(seed=args.seed, orders=max(args.orders, 60), released=False), seed=args.seed)
    config.faults.latency_ms = args.fo_latency_ms
    say(f"mes-bridge demo: a simulated shift, seed {args.seed}, {args.orders} production orders on {spec.lines} lines")
    say("starting Azurite (Table Storage) and the F&O emulator (HTTPS, Entra, OData, message processor) ...")
    with Azurite() as azurite, FoEmulator(config) as emulator:
        settings = load_settings(
            {
                **emulator.bridge_settings(),
                "TABLES_CONNECTION_STRING": azurite.connection_string,
                "TABLES_PREFIX": "demo",
                **DEMO_SETTINGS,
            }
        )
        broker = InMemoryBroker()
        broker.declare(MES_TOPIC, requires_session=True)
        ports = runtime.build(settings, requeue=broker, publisher=BrokerMesPublisher(broker, MES_TOPIC), dead_letters=broker)
        runtime.install(ports)
        host = LocalHost(function_app.app, broker)
        emulator.subscribe(host.event_grid_sink())
        shift = build_shift(spec, emulator.app.tables["ProductionOrderHeaders"], emulator.app.tables["ItemBatches"])
        for order in shift.orders:  # the planner releases the shift's orders in F&O
            emulator.app.release_order("usmf", order)
        ops_before = tables.TABLE_OPS.count
        sent_at: dict[str, float] = {}
        distinct = shift.unique_events + (len(shift.events) - shift.unique_events - shift.duplicates)
        progress = Progress(out, distinct)
        started = time.monotonic()
        burst = (int(len(shift.events) * 0.4), args.throttle_burst) if args.throttle_burst > 0 else None
        burst_until = float("inf")
        with host:
            for index, document in enumerate(shift.events):
                if burst and index == burst[0]:
                    emulator.set_throttle(rate_per_s=args.burst_rps, burst=args.burst_rps)
                    burst_until = time.monotonic() + burst[1]
                if time.monotonic() > burst_until:
                    emulator.set_throttle(rate_per_s=0)
                    burst_until = float("inf")
                send(broker, document, sent_at)
                progress.show(settled.count)
                time.sleep(args.pace)
            while settled.count < distinct and time.monotonic() - started < args.timeout:
                if time.monotonic() > burst_until:
                    emulator.set_throttle(rate_per_s=0)
                    burst_until = float("inf")
                progress.show(settled.count)
                time.sleep(0.1)
            # The shift is done when every event is settled; what the host does after that is the
            # look-again copies the bridge scheduled for messages woken before their copy was due.
            settled_s, invoked = time.monotonic() - started, host.stats.invocations
            emulator.set_throttle(rate_per_s=0)
            host.wait_idle(max(1.0, args.timeout - (time.monotonic() - started)))
            progress.show(settled.count, final=True)
            emulator.wait_idle(60)
            _wait_for_verdicts(ports, time.monotonic() + 30)
        elapsed = time.monotonic() - started
        table_ops = tables.TABLE_OPS.count - ops_before
        verdict = _report(
            say,
            shift,
            emulator,
            broker,
            host,
            ports,
            sent_at,
            (settled_s, elapsed),
            table_ops,
            log_path,
            host.stats.invocations - invoked,
        )
        if args.console:
            _console(say, args, broker, emulator, ports)
        return verdict


def _console(say: Any, args: argparse.Namespace, broker: InMemoryBroker, emulator: FoEmulator, ports: Ports) -> None:
    """Keep the stack up with the operator console on a local port, after adding what a night
    shift finds: a rejected movement, a wrong message, a sequence gap, a consumption in doubt and
    a dead letter (devtools/operator_cases.py)."""
    host = LocalHost(function_app.app, broker)
    orders = sorted(
        {r["ProductionOrderNumber"] for r in emulator.app.tables["ProductionOrderHeaders"] if r["dataAreaId"] == "usmf"}
    )
    with host, ConsoleServer(function_app.app, port=args.console_port) as server:
        say()
        say("adding the operator's cases (rejected, invalid, gap, in doubt, dead letter) ...")
        unused = [o for o in orders if not any(True for _ in ports.ledger.query(production_order=o))][:3]
        for order in unused:  # the planner releases them in F&O
            emulator.app.release_order("usmf", order)
        seed(broker, host, emulator, ports, tuple(unused), applied=False)
        say()
        say(f"Operator console: {server.console_url}")
        say("  sign in with any name (a local stand-in for Entra ID sign-in through App Service authentication)")
        say(f"  the operations API with the local function key: {server.url}/api/ops/parked?code={server.function_key}")
        say("  Ctrl-C stops the stack.")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            say("stopping ...")


def send(broker: InMemoryBroker, document: dict[str, Any] | bytes, sent_at: dict[str, float] | None = None) -> None:
    """What the MES does: an event on its flow's queue, in the production order's session."""
    if isinstance(document, bytes):
        broker.send(INBOUND_FLOWS["material_consumed"].queue, document, session_id="unknown")
        return
    flow = INBOUND_FLOWS[document["type"]]
    if sent_at is not None:
        sent_at.setdefault(document["message_id"], time.time())
    broker.send(flow.queue, encode(document), session_id=document.get("production_order") or f"{document['type']}")


def awaiting_verdict(ports: Ports) -> list[Any]:
    """Messages F&O accepted into its message processor and has not reported processed yet."""
    return [e for e in ports.ledger.query(state=State.FORWARDED) if e.fo_message_type.startswith("ProdProductionOrder")]


def _wait_for_verdicts(ports: Ports, deadline: float) -> None:
    """F&O's processed events arrive after the forward; give them a moment."""
    while time.monotonic() < deadline and awaiting_verdict(ports):
        time.sleep(0.2)


def _report(
    say: Any,
    shift: Shift,
    emulator: FoEmulator,
    broker: InMemoryBroker,
    host: LocalHost,
    ports: Ports,
    sent_at: dict[str, float],
    times: tuple[float, float],
    table_ops: int,
    log_path: Path,
    look_agains: int = 0,
) -> int:
    """`times`: seconds until every event was settled, and until the host was idle (`look_agains`:
    the deliveries in between)."""
    elapsed, idle = times
    entries = list(ports.ledger.query())
    states = Counter(e.state for e in entries)
    parked = Counter(e.reason for e in entries if e.state is State.PARKED)
    duplicates_sent = shift.duplicates
    forwarded = [e for e in entries if e.state in (State.FORWARDED, State.PROCESSED, State.FAILED)]
    latencies = []
    for entry in forwarded:
        at = next((h["at"] for h in entry.history if h["state"] == "Forwarded"), None)
        if at and entry.message_id in sent_at:
            latencies.append((datetime.fromisoformat(at).timestamp() - sent_at[entry.message_id]) * 1000)
    work_orders = [m for m in broker.queue(MES_TOPIC).active if b'"work_order"' in m.body]
    outcomes = [m for m in broker.queue(MES_TOPIC).active if b'"message_outcome"' in m.body]
    fo_calls = sum(n for route, n in emulator.stats.by_route.items() if route in ("data", "api"))
    events_in = len(shift.events)
    say()
    say(
        f"Shift done in {elapsed:.1f} s ({events_in / elapsed:.1f} MES events/s; host.json: {host.workers} sessions per function, "
        f"{host.config.session_idle_timeout_s:g} s session idle timeout, {host.config.thread_count} worker threads)"
    )
    say(
        f"  MES events sent ............ {events_in}  ({shift.unique_events} distinct, {duplicates_sent} resent by the MES, "
        f"{len(shift.events) - shift.unique_events - duplicates_sent} malformed)"
    )
    say(f"  forwarded to F&O ........... {len(forwarded)}")
    if idle - elapsed >= 1:
        say(
            f"  look-again copies .......... {look_agains} came back in the {idle - elapsed:.0f} s after the shift, "
            "each a duplicate (a woken message's own copy, scheduled for when the gap timeout could have passed)"
        )
    say(f"  duplicates dropped ......... {duplicates_sent}  (the ledger knew them; F&O saw each event once)")
    say(f"  parked for an operator ..... {states[State.PARKED]}  " + ", ".join(f"{r} {n}" for r, n in sorted(parked.items())))
    say(
        f"  processed by F&O ........... {states[State.PROCESSED]}   failed in F&O: {states[State.FAILED]}   "
        f"acknowledgements to MES: {len(outcomes)}"
    )
    say(f"  work orders sent to MES .... {len(work_orders)}  (one per released order, re-read over OData)")
    pacer = cast(FoClient, ports.fo).pacer  # the demo runs the real client (runtime.build)
    say(
        f"  F&O throttling burst ....... {emulator.stats.throttled} requests answered 429; the bridge paused {pacer.pauses} times "
        f"({pacer.waited_s:.1f} s waiting for pauses and slots) and lost nothing"
    )
    say(
        f"  per MES event .............. {fo_calls / max(1, len(forwarded)):.2f} F&O calls, {table_ops / max(1, events_in):.1f} Table operations"
    )
    say(
        f"  latency MES -> F&O accepted  p50 {_percentile(latencies, 0.5):.0f} ms, p95 {_percentile(latencies, 0.95):.0f} ms, "
        f"p99 {_percentile(latencies, 0.99):.0f} ms"
    )
    dead = broker.dead_letters()
    if host.stats.failures or dead:
        say(f"  function errors ............ {host.stats.failures} (retried by the broker); dead-lettered: {len(dead)}")
        for error in host.stats.errors[:3]:
            say("    " + error.strip().replace("\n", "\n    ")[:1500])
    _genealogy(say, shift, ports)
    problems = check(shift, emulator, entries, ports.options)
    say()
    if problems:
        say(f"CHECK FAILED: F&O's final state differs from the scenario ({len(problems)} differences):")
        for problem in problems[:20]:
            say(f"  - {problem}")
        say(f"log: {log_path}")
        return 1
    transfers = sum(1 for j in shift.expected.journals.values() if j["JournalType"] == "Transfer")
    say(
        f"Check against F&O: OK. {len(shift.orders)} orders ended; every consumption and output took effect exactly once; "
        f"{len(shift.expected.quality_results)} quality results; {transfers} transfer and {len(shift.expected.journals) - transfers} movement journals; "
        f"nothing lost, nothing doubled."
    )
    say(f"Every message's story is in the ledger (Table Storage). Log: {log_path}")
    return 0


def _genealogy(say: Any, shift: Shift, ports: Ports) -> None:
    order = shift.orders[len(shift.orders) // 2]
    produced = ports.lineage.batches_of_order("USMF", order, "produced")
    if not produced:
        return
    ref = sorted(produced, key=lambda r: r.batch)[0]
    tree = ports.lineage.upstream("USMF", ref.item, ref.batch, depth=3)
    say(f"  genealogy of finished batch {ref.batch} ({ref.item}):")
    for node in tree["orders"]:  # type: ignore[attr-defined]
        say(f"    made by production order {node['order']} from:")
        for child in node["consumed"]:
            say(f"      {child['item']} batch {child['batch']}  {child['quantity']:g}")
    moves = [j for j in shift.expected.journals.values() if j["JournalType"] == "Transfer"]
    if moves:
        item, batch = moves[0]["ItemNumber"], moves[0]["SourceItemBatchNumber"]
        down = ports.lineage.downstream("USMF", item, batch, depth=1)
        for transfer in down.get("transfers", []):  # type: ignore[attr-defined]
            moved = sum(child["quantity"] for child in transfer["produced"])
            say(
                f"  batch {batch} ({item}) moved {moved:g} from warehouse {transfer['from_warehouse']} "
                f"to {transfer['to_warehouse']} (transfer journal {transfer['transfer']})"
            )


def _journal_problems(snapshot: dict[str, Any], expected: dict[str, dict[str, Any]]) -> list[str]:
    """Each MES move is one transfer journal, each adjustment one movement journal, each with one line
    that holds what the MES sent; nothing else."""
    problems: list[str] = []
    headers = {j["JournalNumber"]: j for j in snapshot["journals"]}
    lines: dict[str, list[dict[str, Any]]] = {}
    for line in snapshot["journal_lines"]:
        lines.setdefault(line["JournalNumber"], []).append(line)
    missing = sorted(set(expected) - set(headers))
    extra = sorted(set(headers) - set(expected))
    if missing or extra:
        problems.append(f"journals differ: missing {missing[:3]}, unexpected {extra[:3]}")
    for number, wanted in sorted(expected.items()):
        header = headers.get(number)
        if header is None:
            continue
        wanted = dict(wanted)
        kind = wanted.pop("JournalType")
        if header["JournalType"] != kind:
            problems.append(f"journal {number} is a {header['JournalType']} journal, expected a {kind} journal")
        got = lines.get(number, [])
        if len(got) != 1:
            problems.append(f"journal {number} has {len(got)} lines, expected 1")
            continue
        differ = {k: (got[0].get(k), v) for k, v in wanted.items() if got[0].get(k) != v}
        if differ:
            problems.append(f"journal {number}: (got, expected) {differ}")
    return problems


def check(shift: Shift, emulator: FoEmulator, entries: list[Any], options: MappingOptions) -> list[str]:
    """Differences between F&O's final state and what the scenario should have produced."""
    problems: list[str] = []
    snapshot = emulator.app.snapshot()
    expected = shift.expected
    for order, status in expected.final_status.items():
        actual = snapshot["orders"].get(f"usmf/{order}")
        if actual is None:
            problems.append(f"{order}: F&O never processed a message for it")
            continue
        if actual["status"] != status:
            problems.append(f"{order}: status {actual['status']}, expected {status}")
        for kind, wanted in (("consumed", expected.consumed[order]), ("reported_good", expected.reported_good[order])):
            got = actual[kind]
            for key, quantity in wanted.items():
                if abs(got.get(key, 0.0) - quantity) > 1e-6:
                    problems.append(f"{order}: {kind} {key} is {got.get(key, 0.0):g}, expected {quantity:g}")
            extra = set(got) - set(wanted)
            if extra:
                problems.append(f"{order}: unexpected {kind} {sorted(extra)}")
    # One F&O message may carry several MES events of an order (per-order aggregation): count events.
    counts, unexplained = carried(snapshot["messages"], shift.events, options)
    sent = sum(counts.values())
    if sent != expected.fo_messages:
        problems.append(f"F&O received {sent} MES messages, expected {expected.fo_messages}")
    problems += unexplained[:5]
    failed = [m for m in snapshot["messages"] if m["MessageState"] != "Processed"]
    problems += [
        f"F&O message {m['MessageId']} ({m['MessageType']}) is {m['MessageState']}: {m['MessageInfolog'][:120]}"
        for m in failed[:5]
    ]
    quality = {q["MesMessageId"] for q in snapshot["quality_results"]}
    if quality != expected.quality_results:
        problems.append(
            f"quality results differ: missing {sorted(expected.quality_results - quality)[:3]}, extra {sorted(quality - expected.quality_results)[:3]}"
        )
    problems += _journal_problems(snapshot, expected.journals)
    parked = [e for e in entries if e.state is State.PARKED]
    malformed = len(shift.events) - shift.unique_events - shift.duplicates
    if len(parked) != malformed:
        problems.append(
            f"{len(parked)} messages parked, expected {malformed}: " + ", ".join(f"{e.message_id} {e.reason}" for e in parked[:5])
        )
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--orders", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duplicate-rate", type=float, default=0.05, help="share of events the MES sends twice")
    parser.add_argument("--malformed", type=int, default=4)
    parser.add_argument("--moves", type=int, default=10, help="inventory moves (transfer journals)")
    parser.add_argument("--adjustments", type=int, default=3, help="inventory adjustments (movement journals)")
    parser.add_argument("--quality", type=int, default=12, help="quality samples")
    parser.add_argument("--throttle-burst", type=float, default=3.0, help="seconds of F&O throttling mid-shift (0 = none)")
    parser.add_argument("--burst-rps", type=float, default=5.0, help="F&O's budget during the burst, requests/s")
    parser.add_argument("--fo-latency-ms", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--pace", type=float, default=0.04, help="seconds between MES events (0 = as fast as the MES can send)")
    parser.add_argument("--log", default="demo.log")
    parser.add_argument("--console", action="store_true", help="then keep the stack up with the operator console (make console)")
    parser.add_argument("--console-port", type=int, default=7071, help="the console's local port (0 = any free one)")
    return parser


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
