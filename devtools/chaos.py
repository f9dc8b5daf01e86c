"""`make chaos`: a seeded shift of at least 5,000 MES events through the real functions while
everything around them fails, then F&O's state against the scenario's.

Faults, each alone (`--faults drops`) or all together (the default):

    fo_5xx                 F&O answers 503 to 10 % of calls
    throttle_storms        F&O's budget drops to a few requests/s for seconds at a time (429 + Retry-After)
    slow                   F&O answers after the client's read timeout (the work is done)
    drops                  F&O closes the connection without an answer (half before, half after the work)
    token_expiry           every token F&O accepted expires mid-run (401, then a new token)
    duplicates             the broker delivers a message twice
    lock_loss              a message's lock ends while its function still runs (another worker takes it)
    crash_before_send      the worker dies after claiming the message, before the POST to F&O
    crash_after_send       the worker dies after F&O answered, before the ledger records it
    crash_before_complete  the worker dies after the ledger, before the broker completes the message
    storage_restart        Table Storage (Azurite) goes away and comes back mid-run
    mes_send_failures      the MES topic refuses a send (F&O -> MES: work order, status, outcome)
    event_grid_duplicates  Event Grid delivers a business event twice
    event_grid_reorder     Event Grid delivers business events out of order
    crash_after_publish    the worker dies after publishing to MES, before recording it

F&O 5xx, slow answers, drops and throttling hit the OData reads of a release as much as the MES
messages' calls: the orders are released while the faults are on.

At the end an operator does what the README says for what is left (an in-doubt message F&O
does not have is resubmitted; the messages that waited behind it are resubmitted after it), and
the run checks: every event took effect exactly once or is parked with a reason, none is lost,
no quantity is doubled, the genealogy is complete; and on the MES side, every released order gave
exactly one work order, every MES message F&O processed or failed exactly one final outcome,
every status change was delivered once or superseded with a reason. It exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import function_app
from devtools.azurite import Azurite
from devtools.demo import Settled, awaiting_verdict, check, send
from devtools.fo_carried import carried
from devtools.fo_emulator import EmulatorConfig, FoEmulator
from devtools.fo_emulator.plant import PlantSpec
from devtools.local_host import InMemoryBroker, LocalHost
from devtools.local_host.broker import BrokerMesPublisher, Lease
from devtools.local_host.host import QueueFunction
from devtools.scenario import Shift, ShiftSpec, build_shift
from shared import runtime
from shared.fo.client import FoApi
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.messages import MES_EVENTS
from shared.ops import operations
from shared.outbound.mes_publisher import Envelope, MesPublisher
from shared.reasons import ParkReason
from shared.runtime import Ports
from shared.settings import load_settings
from shared.store.ledger import LedgerEntry, State
from shared.topology import MES_TOPIC

FAULTS = (
    "fo_5xx",
    "throttle_storms",
    "slow",
    "drops",
    "token_expiry",
    "duplicates",
    "lock_loss",
    "crash_before_send",
    "crash_after_send",
    "crash_before_complete",
    "storage_restart",
    "mes_send_failures",
    "event_grid_duplicates",
    "event_grid_reorder",
    "crash_after_publish",
)
REORDER_WINDOW = 8  # Event Grid takes any of the next 8 events first

# Short clocks, so that a lease, a retry or a gap runs out within the run; their order matters:
# the call deadline fits in the lease, an in-doubt message is settled well before a gap parks.
CHAOS_SETTINGS = {
    "FO_READ_TIMEOUT_S": "1",
    "FO_CALL_DEADLINE_S": "5",
    "FO_BACKOFF_BASE_S": "0.05",
    "FO_BACKOFF_MAX_S": "0.5",
    "MESSAGE_LOCK_BUDGET_S": "6",
    "RETRY_FIRST_WAIT_S": "0.5",
    "RETRY_MAX_WAIT_S": "4",
    "GATE_FIRST_WAIT_S": "0.05",
    "GATE_MAX_WAIT_S": "1",
    "GATE_GAP_TIMEOUT_S": "60",
    "IN_DOUBT_CHECK_AFTER_S": "10",
}
EVENTS_PER_ORDER = 7.5  # what build_shift makes of an order, with its resends, quality and moves


class SimulatedCrash(RuntimeError):
    """The worker process died here: nothing after this point ran."""


@dataclass
class Rates:
    fo_5xx: float = 0.10
    slow: float = 0.01
    drops: float = 0.01
    duplicates: float = 0.03
    lock_loss: float = 0.01
    crash: float = 0.005  # at each of the three steps
    mes_send_failures: float = 0.05
    event_grid_duplicates: float = 0.05
    crash_after_publish: float = 0.01
    storm_every_s: float = 25.0
    storm_s: float = 3.0
    storm_rps: float = 4.0
    token_expiry_every_s: float = 20.0

    def scaled(self, intensity: float) -> Rates:
        """Faults `intensity` times as often (a short run still meets every kind)."""
        chances = (
            "fo_5xx",
            "slow",
            "drops",
            "duplicates",
            "lock_loss",
            "crash",
            "mes_send_failures",
            "event_grid_duplicates",
            "crash_after_publish",
        )
        return replace(
            self,
            **{name: min(0.5, getattr(self, name) * intensity) for name in chances},
            storm_every_s=self.storm_every_s / intensity,
            token_expiry_every_s=self.token_expiry_every_s / intensity,
        )


@dataclass
class Injected:
    """What the run did to the bridge, by kind."""

    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.counts[kind] += n


class Chaos:
    """The broker and worker faults: hooks for the local host and a wrapper for the F&O client."""

    def __init__(self, faults: set[str], rates: Rates, broker: InMemoryBroker, seed: int) -> None:
        self.faults, self.rates, self.broker = faults, rates, broker
        self.injected = Injected()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._copies = 0

    def _roll(self, kind: str, rate: float) -> bool:
        if kind not in self.faults:
            return False
        with self._rng_lock:
            hit = self._rng.random() < rate
        if hit:
            self.injected.add(kind)
        return hit

    def before_invoke(self, function: QueueFunction, lease: Lease) -> None:
        message = lease.message
        if self._roll("duplicates", self.rates.duplicates):
            with self._rng_lock:
                self._copies += 1
                copy = self._copies
            # At least once: the same message again, past the broker's duplicate detection.
            self.broker.send(
                lease.queue,
                message.body,
                message_id=f"{message.message_id}|again-{copy}",
                session_id=message.session_id,
                correlation_id=message.correlation_id,
                properties=message.properties,
            )
        if self._roll("lock_loss", self.rates.lock_loss):
            threading.Timer(0.002, self.broker.lose_lock, (lease,)).start()

    def after_invoke(self, function: QueueFunction, lease: Lease) -> None:
        if self._roll("crash_before_complete", self.rates.crash):
            raise SimulatedCrash(f"{function.name} died before completing {lease.message.message_id}")

    def around_send(self, send: Callable[[], Any]) -> Any:
        if self._roll("crash_before_send", self.rates.crash):
            raise SimulatedCrash("died before the POST to F&O")
        answer = send()
        if self._roll("crash_after_send", self.rates.crash):
            raise SimulatedCrash("died after F&O answered, before the ledger recorded it")
        return answer


class MesTopicRefused(RuntimeError):
    """The MES topic refused the send (a ServiceBusError in Azure)."""


class FaultyMesTopic:
    """The MES publisher, with the topic refusing sends and the worker dying right after one."""

    def __init__(self, publisher: MesPublisher, chaos: Chaos) -> None:
        self._publisher, self._chaos = publisher, chaos

    def publish(self, message: Envelope) -> None:
        if self._chaos._roll("mes_send_failures", self._chaos.rates.mes_send_failures):
            raise MesTopicRefused(f"the MES topic refused {message.message_id}")
        self._publisher.publish(message)
        if self._chaos._roll("crash_after_publish", self._chaos.rates.crash_after_publish):
            raise SimulatedCrash(f"died after publishing {message.message_id}, before recording it")


class CrashingFo:
    """The F&O client, with the worker dying around the calls that change F&O."""

    def __init__(self, fo: FoApi, chaos: Chaos) -> None:
        self._fo, self._chaos = fo, chaos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fo, name)

    def send_message(self, *args: Any, **kwargs: Any) -> Any:
        return self._chaos.around_send(lambda: self._fo.send_message(*args, **kwargs))

    def call_service(self, *args: Any, **kwargs: Any) -> Any:
        return self._chaos.around_send(lambda: self._fo.call_service(*args, **kwargs))

    def batch(self, *args: Any, **kwargs: Any) -> Any:
        return self._chaos.around_send(lambda: self._fo.batch(*args, **kwargs))


class Weather:
    """Faults on a clock: throttling storms, token expiry, the storage restart."""

    def __init__(
        self,
        faults: set[str],
        rates: Rates,
        emulator: FoEmulator,
        azurite: Azurite,
        injected: Injected,
        progress: Callable[[], float],
    ) -> None:
        self.faults, self.rates, self.emulator, self.azurite = faults, rates, emulator, azurite
        self.injected, self.progress = injected, progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-weather", daemon=True)

    def __enter__(self) -> Weather:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.emulator.set_throttle(rate_per_s=0)

    def _run(self) -> None:
        started = time.monotonic()
        next_storm = started + self.rates.storm_every_s / 2
        storm_ends = float("inf")
        next_expiry = started + self.rates.token_expiry_every_s
        restarted = False
        while not self._stop.wait(0.1):
            now = time.monotonic()
            if "throttle_storms" in self.faults:
                if now >= next_storm:
                    self.emulator.set_throttle(rate_per_s=self.rates.storm_rps, burst=self.rates.storm_rps)
                    self.injected.add("throttle_storms")
                    storm_ends, next_storm = now + self.rates.storm_s, now + self.rates.storm_every_s
                elif now >= storm_ends:
                    self.emulator.set_throttle(rate_per_s=0)
                    storm_ends = float("inf")
            if "token_expiry" in self.faults and now >= next_expiry:
                self.injected.add("token_expiry")
                self.injected.add("tokens_expired", self.emulator.entra.expire_issued_tokens())
                next_expiry = now + self.rates.token_expiry_every_s
            if "storage_restart" in self.faults and not restarted and self.progress() >= 0.5:
                restarted = True
                self.injected.add("storage_restart")
                self.azurite.restart()


@dataclass
class MesVerdict:
    """What MES received, against what F&O did."""

    released: int = 0
    work_orders_lost: list[str] = field(default_factory=list)
    work_orders_doubled: list[str] = field(default_factory=list)
    final_in_fo: int = 0  # MES messages F&O processed or failed
    outcomes_lost: list[str] = field(default_factory=list)
    outcomes_doubled: list[str] = field(default_factory=list)
    outcomes_wrong: list[str] = field(default_factory=list)
    status_changes: int = 0
    status_delivered: int = 0
    status_superseded: int = 0
    status_lost: list[str] = field(default_factory=list)
    status_doubled: list[str] = field(default_factory=list)

    @property
    def lost(self) -> list[str]:
        return [*self.work_orders_lost, *self.outcomes_lost, *self.status_lost]

    @property
    def doubled(self) -> list[str]:
        return [*self.work_orders_doubled, *self.outcomes_doubled, *self.status_doubled]


@dataclass
class Verdict:
    problems: list[str]
    lost: list[str]
    doubled: list[str]
    genealogy_orders: int
    genealogy_missing: list[str]
    mes: MesVerdict = field(default_factory=MesVerdict)


def shift_spec(events: int, seed: int) -> ShiftSpec:
    orders = max(2, round(events / EVENTS_PER_ORDER))
    return ShiftSpec(
        seed=seed,
        orders=orders,
        quality_samples=max(2, orders // 8),
        inventory_moves=max(2, orders // 10),
        inventory_adjustments=max(1, orders // 20),
        duplicate_rate=0.05,
        malformed=4,
    )


@dataclass
class ChaosReport:
    exit_code: int
    injected: dict[str, int]  # by fault kind, as the parts that suffered them counted
    verdict: Verdict | None = None
    resolution: Resolution | None = None


def run(args: argparse.Namespace, out: Any = sys.stdout) -> int:
    return execute(args, out).exit_code


def execute(args: argparse.Namespace, out: Any = sys.stdout) -> ChaosReport:
    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    faults = set(FAULTS) if args.faults == "all" else set(args.faults.split(","))
    unknown = faults - set(FAULTS)
    if unknown:
        say(f"unknown fault kinds {sorted(unknown)}; choose from {', '.join(FAULTS)} or all")
        return ChaosReport(2, {})
    log_path = Path(args.log)
    file_handler = logging.FileHandler(log_path, mode="w")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    settled = Settled()
    outcomes = _Outcomes()
    bridge_log = logging.getLogger("mesbridge")
    bridge_log.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [file_handler, settled, outcomes]
    for handler in handlers:
        bridge_log.addHandler(handler)
    try:
        return _run(args, faults, say, settled, outcomes, log_path)
    finally:
        for handler in handlers:
            bridge_log.removeHandler(handler)
        file_handler.close()


class _Outcomes(logging.Handler):
    """How often the pipeline forwarded, waited, retried and parked (from its outcome log lines),
    and what each Event Grid function said of each business event (superseded, with its reason)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()
        self.business_events: dict[str, set[str]] = defaultdict(set)

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "outcome", None)
        if outcome:
            self.counts[str(outcome)] += 1
            event_id = getattr(record, "fo_event_id", None)
            if event_id:
                self.business_events[str(event_id)].add(str(outcome))


def _run(
    args: argparse.Namespace, faults: set[str], say: Callable[[str], None], settled: Settled, outcomes: _Outcomes, log_path: Path
) -> ChaosReport:
    rates = Rates().scaled(args.intensity)
    spec = shift_spec(args.events, args.seed)
    config = EmulatorConfig(plant=PlantSpec(seed=args.seed, orders=max(spec.orders, 60), released=False), seed=args.seed)
    if "fo_5xx" in faults:
        config.faults.error_5xx_rate = rates.fo_5xx
    if "slow" in faults:
        config.faults.slow_rate = rates.slow
        config.faults.slow_s = float(CHAOS_SETTINGS["FO_READ_TIMEOUT_S"]) + 0.5
    if "drops" in faults:
        config.faults.drop_rate = rates.drops
    say(f"mes-bridge chaos run: seed {args.seed}, faults: {', '.join(sorted(faults))}")
    with Azurite(persistent=True) as azurite, FoEmulator(config) as emulator:
        settings = load_settings(
            {
                **emulator.bridge_settings(),
                "TABLES_CONNECTION_STRING": azurite.connection_string,
                "TABLES_PREFIX": "chaos",
                **CHAOS_SETTINGS,
            }
        )
        broker = InMemoryBroker()
        # As infra/resources.bicep declares the MES topic: sessions, duplicate detection for an hour.
        broker.declare(MES_TOPIC, requires_session=True, duplicate_window_s=3600)
        chaos = Chaos(faults, rates, broker, args.seed)
        ports = runtime.build(settings, requeue=broker, publisher=BrokerMesPublisher(broker, MES_TOPIC), dead_letters=broker)
        ports.fo = cast(FoApi, CrashingFo(ports.fo, chaos))
        ports.publisher = FaultyMesTopic(ports.publisher, chaos)
        if "event_grid_duplicates" in faults:
            emulator.app.events.duplicate_rate = rates.event_grid_duplicates
        if "event_grid_reorder" in faults:
            emulator.app.events.reorder_window = REORDER_WINDOW
        runtime.install(ports)
        host = LocalHost(
            function_app.app,
            broker,
            before_invoke=chaos.before_invoke,
            after_invoke=chaos.after_invoke,
        )
        emulator.subscribe(host.event_grid_sink())
        shift = build_shift(spec, emulator.app.tables["ProductionOrderHeaders"], emulator.app.tables["ItemBatches"])
        for order in shift.orders:
            emulator.app.release_order("usmf", order)
        distinct = len(shift.events) - shift.duplicates
        say(
            f"  {len(shift.events)} MES events ({distinct} distinct, {shift.duplicates} resent by the MES, "
            f"{len(shift.events) - shift.unique_events - shift.duplicates} malformed) for {len(shift.orders)} production orders"
        )
        started = time.monotonic()
        sent = 0
        with host:
            with Weather(faults, rates, emulator, azurite, chaos.injected, lambda: sent / len(shift.events)):
                for document in shift.events:
                    send(broker, document)
                    sent += 1
                    if sent % max(1, len(shift.events) // 10) == 0:
                        say(
                            f"  sent {sent}/{len(shift.events)}, settled {settled.count}/{distinct} "
                            f"({time.monotonic() - started:.0f} s)"
                        )
                    time.sleep(1 / args.rate)
                quiet = _settle(host, emulator, ports, args.timeout - (time.monotonic() - started))
            faulted_s = time.monotonic() - started
            say(f"  the bridge {'settled' if quiet else 'did NOT settle'} after {faulted_s:.0f} s; the faults stop")
            # The storm is over: the operator cleans up what is left.
            chaos.faults = set()
            emulator.set_faults(error_5xx_rate=0.0, slow_rate=0.0, drop_rate=0.0)
            emulator.app.events.duplicate_rate, emulator.app.events.reorder_window = 0.0, 0
            parked_before = Counter(e.reason for e in ports.ledger.query(state=State.PARKED))
            resolved = _operator(ports, broker, host, emulator, say, args.timeout)
        elapsed = time.monotonic() - started
        entries = list(ports.ledger.query())
        verdict = _verdict(shift, emulator, ports, entries)
        verdict.mes = _mes_verdict(shift, emulator, broker, entries, outcomes)
        code = _report(
            say,
            shift,
            faults,
            chaos.injected,
            emulator,
            host,
            ports,
            outcomes,
            parked_before,
            resolved,
            verdict,
            faulted_s,
            elapsed,
            log_path,
        )
        stats = emulator.stats
        injected = {
            **chaos.injected.counts,
            "fo_5xx": stats.injected_5xx,
            "slow": stats.slowed,
            "drops": stats.dropped,
            "throttle_storms": stats.throttled,
            "token_expiry": stats.unauthorized,
            "event_grid_duplicates": emulator.app.events.doubled,
            "event_grid_reorder": emulator.app.events.reordered,
        }
        return ChaosReport(code, {k: n for k, n in injected.items() if k in faults}, verdict, resolved)


def _settle(host: LocalHost, emulator: FoEmulator, ports: Ports, timeout: float) -> bool:
    """Wait until nothing moves: the broker is empty, F&O has processed and reported everything,
    and no message waits for F&O's verdict."""
    deadline = time.monotonic() + max(timeout, 1.0)
    while time.monotonic() < deadline:
        quiet = host.wait_idle(max(0.1, deadline - time.monotonic())) and emulator.wait_idle(
            max(0.1, deadline - time.monotonic())
        )
        if quiet and not awaiting_verdict(ports) and host.wait_idle(0.1):
            return True
        time.sleep(0.5)
    return False


@dataclass
class Resolution:
    in_doubt_settled_by_fo: int = 0
    #: The MES message ids the operator resubmitted or confirmed, every member of a merged F&O message among them.
    in_doubt_resubmitted: list[str] = field(default_factory=list)
    in_doubt_confirmed: list[str] = field(default_factory=list)
    #: The operator's decisions on in-doubt messages: one per F&O message, however many MES messages it carried.
    in_doubt_decisions: int = 0
    waited_behind_resubmitted: int = 0
    dead_letters_resubmitted: int = 0
    rounds: int = 0
    in_doubt_confirmed_by_bridge: int = 0
    resumed_by_bridge: int = 0

    @property
    def operator_actions(self) -> int:
        """Each action an operator had to take: a confirm or a resubmission of an in-doubt F&O message
        (all its MES messages at once), a resubmission of a parked message, of a dead letter."""
        return self.in_doubt_decisions + self.waited_behind_resubmitted + self.dead_letters_resubmitted


def _operator(
    ports: Ports,
    broker: InMemoryBroker,
    host: LocalHost,
    emulator: FoEmulator,
    say: Callable[[str], None],
    timeout: float,
) -> Resolution:
    """What the README tells an operator to do with what is left, until nothing is left."""
    resolution = Resolution()
    resolution.in_doubt_settled_by_fo = sum(
        1 for e in ports.ledger.query() if e.state in (State.PROCESSED, State.FAILED) and "settles the doubt" in e.detail
    )
    for _ in range(6):
        parked = list(ports.ledger.query(state=State.PARKED))
        in_doubt = [e for e in parked if e.reason == ParkReason.IN_DOUBT]
        waited = [e for e in parked if e.reason in (ParkReason.GAP, ParkReason.NO_START)]
        if not in_doubt and not waited and not broker.dead_letters():
            break
        resolution.rounds += 1
        # Check F&O first (Message processor messages): only what F&O does not have is sent again.
        in_fo = _fo_contents(emulator.app.snapshot())
        decide_in_doubt(ports, in_doubt, in_fo, resolution)
        # Dead letters before what waits: a message parked `gap` behind a dead-lettered one resumes by
        # itself once that one is forwarded (the gap wake-up); resubmitting it first only parks it again.
        dead_before = resolution.dead_letters_resubmitted
        for name, flow in INBOUND_FLOWS.items():
            for message in broker.dead_letters(flow.queue):
                operations.resubmit_dead_lettered(broker, name, message.sequence_number)
                resolution.dead_letters_resubmitted += 1
        if in_doubt or resolution.dead_letters_resubmitted > dead_before:
            _settle(host, emulator, ports, timeout)
            waited = [e for e in ports.ledger.query(state=State.PARKED) if e.reason in (ParkReason.GAP, ParkReason.NO_START)]
        for entry in waited:
            operations.resubmit(
                ports.ledger, ports.requeue, entry.company, entry.message_id, note="its predecessor is in F&O now"
            )
            resolution.waited_behind_resubmitted += 1
        _settle(host, emulator, ports, timeout)
    # What the bridge did by itself, read from the rows' histories (the operator's own steps say "by <who>").
    for listed in ports.ledger.query():
        if listed.state not in (State.FORWARDED, State.PROCESSED, State.FAILED, State.PARKED):
            continue
        row = ports.ledger.get(listed.company, listed.message_id)
        details = [h.get("detail", "") for h in row.history] if row is not None else []
        resolution.in_doubt_confirmed_by_bridge += any(d.startswith("confirmed by the bridge") for d in details)
        resolution.resumed_by_bridge += any(d.startswith("resumed by the bridge") for d in details)
    if resolution.rounds:
        say(
            f"  operator: {len(resolution.in_doubt_resubmitted)} in-doubt messages F&O did not have resubmitted, "
            f"{len(resolution.in_doubt_confirmed)} that F&O had confirmed "
            f"({resolution.in_doubt_decisions} decisions, one per F&O message), "
            f"{resolution.waited_behind_resubmitted} that waited behind them resubmitted, "
            f"{resolution.dead_letters_resubmitted} dead letters resubmitted ({resolution.rounds} rounds)"
        )
    return resolution


def decide_in_doubt(ports: Ports, in_doubt: list[LedgerEntry], in_fo: Counter[str], resolution: Resolution) -> None:
    """The operator's decision on each in-doubt F&O message, from what F&O's Message processor
    messages hold (`in_fo`, by content hash): confirm what F&O has, resubmit what it lacks. A row's
    ContentHash is that of the F&O message it went in (merged or alone): one look, one decision for
    all of that F&O message's MES messages."""
    decided: set[str] = set()
    for entry in in_doubt:
        if entry.message_id in decided:
            continue  # decided with the F&O message it travelled in
        if entry.extra.get("ContentHash") in in_fo:
            # F&O has it, but its processed event never matched (Event Grid gave up): confirm it.
            note = "found in Message processor messages"
            answer = operations.confirm_applied(
                ports.ledger, ports.gate, ports.lineage, ports.requeue, entry.company, entry.message_id, note
            )
            acted = [str(a["message_id"]) for a in answer["acted_on"]]
            resolution.in_doubt_confirmed += acted
        else:
            done = operations.resubmit(
                ports.ledger, ports.requeue, entry.company, entry.message_id, note="not in F&O after checking"
            )
            acted = [r.entry.message_id for r in done.sent]
            resolution.in_doubt_resubmitted += acted
        resolution.in_doubt_decisions += 1
        decided.update(acted)


def _fo_contents(snapshot: dict[str, Any]) -> Counter[str]:
    """How many messages F&O's message processor holds for each content (by its SHA-256)."""
    return Counter(hashlib.sha256(m["MessageContent"].encode()).hexdigest() for m in snapshot["messages"])


def _verdict(shift: Shift, emulator: FoEmulator, ports: Ports, entries: list[Any]) -> Verdict:
    """Each distinct MES event against F&O: applied exactly once, or parked with a reason."""
    problems = check(shift, emulator, entries, ports.options)
    by_id = {e.message_id: e for e in entries}
    snapshot = emulator.app.snapshot()
    in_fo, _ = carried(snapshot["messages"], shift.events, ports.options)
    quality = Counter(q["MesMessageId"] for q in snapshot["quality_results"])
    lines_per_journal = Counter(line["JournalNumber"] for line in snapshot["journal_lines"])
    lost: list[str] = []
    doubled: list[str] = []
    seen: set[str] = set()
    for document in shift.events:
        if isinstance(document, bytes) or document["message_id"] in seen:
            continue
        seen.add(document["message_id"])
        flow = INBOUND_FLOWS[document["type"]]
        event = MES_EVENTS[document["type"]].model_validate(document)
        call = flow.map(event, ports.options)
        entry = by_id.get(document["message_id"])
        parked = entry is not None and entry.state is State.PARKED
        if document["type"] == "quality_result":
            applied = quality[document["message_id"]]
        elif document["type"] in ("inventory_moved", "inventory_adjusted"):
            lines = sum(1 for op in getattr(call, "operations", []) if op.path.endswith("JournalEntries"))
            applied = lines_per_journal[getattr(call, "natural_key", "")] // max(1, lines)
        else:
            applied = in_fo[document["message_id"]]
        if applied == 0 and not parked:
            lost.append(document["message_id"])
        if applied > 1:
            doubled.append(f"{document['message_id']} applied {applied} times")
    missing: list[str] = []
    for order in shift.orders:
        consumed = {f"{r.item}/{r.batch}" for r in ports.lineage.batches_of_order("USMF", order, "consumed")}
        produced = {f"{r.item}/{r.batch}" for r in ports.lineage.batches_of_order("USMF", order, "produced")}
        if consumed != set(shift.expected.consumed[order]) or produced != set(shift.expected.reported_good[order]):
            missing.append(order)
    open_rows = [e for e in entries if e.state in (State.WAITING, State.FORWARDING)] + awaiting_verdict(ports)
    problems += [f"{e.message_id} is still {e.state.value}: {e.reason} {e.detail[:80]}" for e in open_rows[:10]]
    return Verdict(problems, lost, doubled, len(shift.orders), missing)


def _mes_verdict(
    shift: Shift, emulator: FoEmulator, broker: InMemoryBroker, entries: list[Any], outcomes: _Outcomes
) -> MesVerdict:
    """The MES topic against F&O: one work order per released order, one final outcome per MES
    message F&O processed or failed, each status change delivered once or superseded with a reason."""
    verdict = MesVerdict()
    published = [json.loads(m.body) for m in broker.queue(MES_TOPIC).active]
    parked = {e.production_order for e in entries if e.state is State.PARKED and e.flow == "order_released"}
    work_orders = Counter(m["production_order"] for m in published if m["type"] == "work_order")
    verdict.released = len(shift.orders)
    for order in shift.orders:
        if work_orders[order] == 0 and order not in parked:
            verdict.work_orders_lost.append(f"released order {order} has no work order in MES")
        if work_orders[order] > 1:
            verdict.work_orders_doubled.append(f"released order {order} has {work_orders[order]} work orders in MES")
    # Outcomes: F&O's final messages by content, the MES messages the ledger settled with that content.
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in published:
        if message["type"] == "message_outcome":
            received[message["mes_message_id"]].append(message)
    final_in_fo = Counter(
        hashlib.sha256(m["MessageContent"].encode()).hexdigest()
        for m in emulator.app.snapshot()["messages"]
        if m["MessageState"] in ("Processed", "Failed")
    )
    verdict.final_in_fo = sum(final_in_fo.values())
    settled: dict[str, list[Any]] = defaultdict(list)
    for entry in entries:
        if entry.state in (State.PROCESSED, State.FAILED) and entry.extra.get("ContentHash"):
            settled[entry.extra["ContentHash"]].append(entry)
    for content, n in final_in_fo.items():
        told = [e for e in settled[content] if received[e.message_id]]
        if len(told) < n:
            verdict.outcomes_lost.append(
                f"{n - len(told)} MES message(s) F&O finished (content {content[:12]}) have no outcome in MES"
            )
    by_id = {e.message_id: e for e in entries}
    for message_id, messages in received.items():
        kinds = Counter(m["outcome"] for m in messages)
        if any(n > 1 for n in kinds.values()):
            verdict.outcomes_doubled.append(f"{message_id}: {dict(kinds)} outcomes in MES")
        if kinds["accepted"] and kinds["rejected"] and not any(m.get("supersedes") == "rejected" for m in messages):
            verdict.outcomes_wrong.append(f"{message_id}: accepted and rejected, and neither supersedes the other")
        final = "accepted" if kinds["accepted"] else "rejected"
        entry = by_id.get(message_id)
        wanted = {State.PROCESSED: "accepted", State.FAILED: "rejected"}.get(entry.state) if entry else None
        if wanted != final:
            verdict.outcomes_wrong.append(
                f"{message_id}: MES's final outcome is {final}, the ledger says {entry.state if entry else 'nothing'}"
            )
    # Status changes, by (order, ControlNumber): delivered once, or superseded with a logged reason.
    statuses = Counter((m["production_order"], m["fo_control_number"]) for m in published if m["type"] == "order_status_changed")
    for event in emulator.app.events.raised:
        if event["BusinessEventId"] != "ProductionOrderStatusChangedBusinessEvent":
            continue
        verdict.status_changes += 1
        key = (event["ProductionOrderNumber"], event["ControlNumber"])
        if statuses[key] > 1:
            verdict.status_doubled.append(f"{key[0]} status {event['ProductionOrderStatus']} reached MES {statuses[key]} times")
        if statuses[key]:
            verdict.status_delivered += 1
        elif "superseded" in outcomes.business_events.get(event["EventId"], set()):
            verdict.status_superseded += 1
        else:
            verdict.status_lost.append(
                f"{key[0]} status {event['ProductionOrderStatus']} (ControlNumber {key[1]}) neither delivered nor superseded"
            )
    return verdict


def _report(
    say: Callable[[str], None],
    shift: Shift,
    faults: set[str],
    injected: Injected,
    emulator: FoEmulator,
    host: LocalHost,
    ports: Ports,
    outcomes: _Outcomes,
    parked_before: Counter[str],
    resolved: Resolution,
    verdict: Verdict,
    faulted_s: float,
    elapsed: float,
    log_path: Path,
) -> int:
    stats = emulator.stats
    kinds = {
        "fo_5xx": f"{stats.injected_5xx} F&O calls answered 503",
        "throttle_storms": f"{injected.counts['throttle_storms']} storms, {stats.throttled} calls answered 429",
        "slow": f"{stats.slowed} answers slower than the read timeout",
        "drops": f"{stats.dropped} connections dropped",
        "token_expiry": f"{injected.counts['token_expiry']} times ({injected.counts['tokens_expired']} tokens), "
        f"{stats.unauthorized} calls answered 401",
        "duplicates": f"{injected.counts['duplicates']} messages delivered twice",
        "lock_loss": f"{injected.counts['lock_loss']} locks lost mid-invocation",
        "crash_before_send": f"{injected.counts['crash_before_send']} crashes",
        "crash_after_send": f"{injected.counts['crash_after_send']} crashes",
        "crash_before_complete": f"{injected.counts['crash_before_complete']} crashes",
        "storage_restart": f"{injected.counts['storage_restart']} restart of Table Storage",
        "mes_send_failures": f"{injected.counts['mes_send_failures']} sends refused by the MES topic",
        "event_grid_duplicates": f"{emulator.app.events.doubled} business events delivered twice",
        "event_grid_reorder": f"{emulator.app.events.reordered} business events delivered ahead of earlier ones",
        "crash_after_publish": f"{injected.counts['crash_after_publish']} crashes",
    }
    events_in = len(shift.events)
    say("")
    say(f"Chaos run done in {elapsed:.0f} s ({events_in / max(faulted_s, 1e-9):.1f} MES events/s while faults were on)")
    say("  faults injected:")
    for kind in FAULTS:
        if kind in faults:
            say(f"    {kind:<22} {kinds[kind]}")
    say(
        f"  retries: {ports.fo.stats.retries} F&O calls retried in the client, {outcomes.counts['retrying']} messages retried later, "
        f"{host.stats.failures} function invocations failed and were redelivered, "
        f"{emulator.app.events.retries} business events redelivered by Event Grid"
    )
    say("  parked before the operator: " + (", ".join(f"{r} {n}" for r, n in sorted(parked_before.items())) or "none"))
    say(
        f"  in doubt: {resolved.in_doubt_settled_by_fo} settled by F&O's processed event, "
        f"{len(resolved.in_doubt_confirmed)} confirmed by the operator (F&O had them), "
        f"{len(resolved.in_doubt_resubmitted)} resubmitted by the operator (F&O did not have them)"
        + (": " + ", ".join(resolved.in_doubt_resubmitted[:10]) if resolved.in_doubt_resubmitted else "")
        + f"; {resolved.in_doubt_decisions} operator decisions, one per F&O message"
    )
    say(
        f"  by the bridge itself: {resolved.in_doubt_confirmed_by_bridge} in-doubt messages confirmed by reading F&O, "
        f"{resolved.resumed_by_bridge} parked messages resumed when their order's watermark moved"
    )
    say(
        f"  operator actions needed: {resolved.operator_actions} "
        f"({resolved.operator_actions * 5000 / max(events_in, 1):.1f} per 5,000 events)"
    )
    final_parked = Counter(e.reason for e in ports.ledger.query(state=State.PARKED))
    say("  parked at the end: " + ", ".join(f"{r} {n}" for r, n in sorted(final_parked.items())))
    mes = verdict.mes
    say(f"  F&O side: lost = {len(verdict.lost)}, doubled = {len(verdict.doubled)}")
    say(
        f"  MES side: lost = {len(mes.lost)}, doubled = {len(mes.doubled)}, wrong outcome = {len(mes.outcomes_wrong)}"
        f"  (work orders for {mes.released - len(mes.work_orders_lost)} of {mes.released} released orders; "
        f"final outcomes for {mes.final_in_fo - len(mes.outcomes_lost)} of {mes.final_in_fo} messages F&O processed or failed; "
        f"{mes.status_changes} status changes: {mes.status_delivered} delivered, {mes.status_superseded} superseded with a reason)"
    )
    say(
        f"  genealogy complete for {verdict.genealogy_orders - len(verdict.genealogy_missing)} of {verdict.genealogy_orders} orders"
    )
    failed = (
        verdict.problems or verdict.lost or verdict.doubled or verdict.genealogy_missing or mes.lost or mes.doubled
    ) or mes.outcomes_wrong
    if failed:
        say("CHAOS CHECK FAILED:")
        mes_lines = [*mes.lost[:10], *mes.doubled[:10], *mes.outcomes_wrong[:10]]
        for line in [*verdict.lost[:10], *verdict.doubled[:10], *verdict.problems[:20], *mes_lines]:
            say(f"  - {line}")
        if verdict.genealogy_missing:
            say(f"  - genealogy incomplete for {verdict.genealogy_missing[:10]}")
        say(f"log: {log_path}")
        return 1
    say(
        "Check against F&O and MES: OK. Every event took effect exactly once or is parked with its reason; "
        "MES got one work order per release, one final outcome per processed message; nothing lost, nothing doubled."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=5000, help="MES events in the shift (about; resends and malformed included)"
    )
    parser.add_argument("--faults", default="all", help="comma-separated fault kinds, or all")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--intensity", type=float, default=1.0, help="faults this many times as often")
    parser.add_argument("--rate", type=float, default=20.0, help="MES events sent per second")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the bridge to settle")
    parser.add_argument("--log", default="chaos.log")
    return parser


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
