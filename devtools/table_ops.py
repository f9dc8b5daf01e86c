"""Where a `make demo` run's Table operations go, for the F&O -> MES side: each operation is
attributed to the business event being handled (its consumer and what became of it) and to what
it was (the label of its `storage_call`); and each Service Bus delivery of the MES -> F&O side to
what the delivery was (the MES's message, a look-again, woken or resubmitted copy) and its outcome.

    PYTHONPATH=$PWD .venv/bin/python -m devtools.table_ops [--sites] [the demo's flags]

`--sites` labels each operation with where the pipeline made it too (the nearest three functions of
`shared/inbound` on the stack, innermost first), to see which step of a delivery costs what.

The figures are counts, not timings: the same seed gives nearly the same table on any machine
(Event Grid retries and the order of deliveries still vary a little from run to run).
"""

from __future__ import annotations

import io
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from devtools import demo
from shared.inbound import pipeline, settlement
from shared.inbound.servicebus import ATTEMPT, IN_DOUBT_CHECK, RESUBMIT
from shared.inbound.wakeup import WAKE
from shared.outbound import handlers
from shared.store import tables


@dataclass
class Attribution:
    """Operations per (consumer, outcome): how many deliveries, how many operations, and by label."""

    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    operations: Counter[tuple[str, str]] = field(default_factory=Counter)
    labels: defaultdict[tuple[str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    outside: Counter[str] = field(default_factory=Counter)
    #: MES messages that went to F&O inside another's merged message (counted as forwarded events too).
    merged: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _current: threading.local = field(default_factory=threading.local)

    def count(self, what: str) -> None:
        labels: Counter[str] | None = getattr(self._current, "labels", None)
        if labels is not None:
            labels[what] += 1  # this thread's own event: no lock needed until it is merged
        else:
            with self._lock:
                self.outside[what] += 1

    @contextmanager
    def event(self, consumer: str) -> Iterator[dict[str, str]]:
        self._current.labels = labels = Counter[str]()
        result = {"outcome": "raised (Event Grid retries)"}
        try:
            yield result
        finally:
            self._current.labels = None
            key = (consumer, result["outcome"])
            with self._lock:
                self.deliveries[key] += 1
                self.operations[key] += sum(labels.values())
                self.labels[key].update(labels)

    def merged_into(self, members: int) -> None:
        """A delivery's F&O message carried `members` MES messages, its own included."""
        with self._lock:
            self.merged += members - 1

    def report(self) -> str:
        lines = [*self._inbound_report(), "", "Table operations of the F&O -> MES side, per Event Grid delivery:"]
        lines.append(f"  {'consumer':<22} {'outcome':<28} {'deliveries':>10} {'ops':>6} {'ops each':>9}  by label")
        for consumer in sorted(c for c in {c for c, _ in self.deliveries} if not c.startswith(_INBOUND)):
            for key in sorted((k for k in self.deliveries if k[0] == consumer), key=lambda k: -self.deliveries[k]):
                n, ops = self.deliveries[key], self.operations[key]
                labels = ", ".join(f"{label} {count}" for label, count in self.labels[key].most_common())
                lines.append(f"  {consumer:<22} {key[1]:<28} {n:>10} {ops:>6} {ops / n:>9.2f}  {labels}")
            n = sum(v for k, v in self.deliveries.items() if k[0] == consumer)
            ops = sum(v for k, v in self.operations.items() if k[0] == consumer)
            lines.append(f"  {consumer:<22} {'(every delivery)':<28} {n:>10} {ops:>6} {ops / max(n, 1):>9.2f}")
        outbound = [k for k in self.deliveries if not k[0].startswith(_INBOUND)]
        total = sum(self.operations[k] for k in outbound)
        lines.append(f"  F&O -> MES in all: {total} operations for {sum(self.deliveries[k] for k in outbound)} deliveries")
        lines.append(f"  outside any delivery (set-up, the demo's own reads): {sum(self.outside.values())} operations")
        lines.append("    by label: " + ", ".join(f"{label} {n}" for label, n in self.outside.most_common()))
        return "\n".join(lines)

    def _inbound_report(self) -> list[str]:
        """The MES -> F&O side by what the delivery was (the MES's message or a copy the bridge
        scheduled) and what became of it; per forwarded message, every delivery's operations counted."""
        inbound = [k for k in self.deliveries if k[0].startswith(_INBOUND)]
        lines = ["Table operations of the MES -> F&O side, per Service Bus delivery:"]
        lines.append(f"  {'delivery':<22} {'outcome':<28} {'deliveries':>10} {'ops':>6} {'ops each':>9}  by label")
        for key in sorted(inbound, key=lambda k: (k[0], -self.deliveries[k])):
            n, ops = self.deliveries[key], self.operations[key]
            labels = ", ".join(f"{label} {count}" for label, count in self.labels[key].most_common())
            lines.append(f"  {key[0][len(_INBOUND) :]:<22} {key[1]:<28} {n:>10} {ops:>6} {ops / n:>9.2f}  {labels}")
        ops = sum(self.operations[k] for k in inbound)
        forwarded = sum(self.deliveries[k] for k in inbound if k[1] == "forwarded")
        events = forwarded + self.merged
        lines.append(
            f"  MES -> F&O in all: {ops} operations for {sum(self.deliveries[k] for k in inbound)} deliveries; "
            f"{events} MES messages forwarded ({forwarded} deliveries, {self.merged} more merged into their F&O message): "
            f"{ops / max(events, 1):.2f} per forwarded message"
        )
        return lines


#: Consumers of the MES -> F&O side are keyed by the kind of delivery, under this prefix.
_INBOUND = "inbound:"


def _kind(delivery: Any) -> str:
    """What a Service Bus delivery is: the MES's own message or one of the copies the bridge schedules."""
    properties = delivery.properties
    if IN_DOUBT_CHECK in properties:
        return "in-doubt check"
    if RESUBMIT in properties:
        return "resubmission"
    if WAKE in properties:
        return "woken copy"
    if ATTEMPT in properties:
        return "look-again copy"
    return "from the MES"


def _site(frame: Any) -> str:
    """Where in the pipeline an operation was made: the nearest `shared/inbound` functions that called it."""
    names: list[str] = []
    while frame is not None and len(names) < 3:
        code = frame.f_code
        if "shared/inbound" in code.co_filename.replace("\\", "/") and code.co_name not in ("<lambda>", "record"):
            names.append(code.co_name)
        frame = frame.f_back
    return "<".join(names) or "-"


def attribute(attribution: Attribution, *, sites: bool = False) -> Callable[[], None]:
    """Count every Table operation into `attribution` from now on (`sites`: labelled with where the
    pipeline made it); the returned function undoes it."""
    counter = tables.TABLE_OPS
    original_add, original_receive, original_process = counter.add, handlers.receive, pipeline.process
    original_group = settlement.forwarded_group

    def add(n: int = 1) -> None:
        original_add(n)
        # Called from `storage_call`'s generator, whose `what` says what the operation was.
        caller = sys._getframe(1)
        label = str(caller.f_locals.get("what", caller.f_code.co_name))
        attribution.count(f"{label} @{_site(caller.f_back)}" if sites else label)

    def receive(consumer: str, event_grid_id: str, data: Any, ports: Any) -> handlers.Handled:
        with attribution.event(consumer) as result:
            handled = original_receive(consumer, event_grid_id, data, ports)
            result["outcome"] = str(handled.outcome)
            return handled

    def process(delivery: Any, flow: Any, ports: Any) -> Any:
        with attribution.event(_INBOUND + _kind(delivery)) as result:
            processed = original_process(delivery, flow, ports)
            result["outcome"] = str(processed.outcome)
            return processed

    def forwarded_group(attempt: Any, group: Any, *args: Any) -> Any:
        result = original_group(attempt, group, *args)
        if result.outcome == "forwarded":
            attribution.merged_into(len(group.members))
        return result

    counter.add = add  # type: ignore[method-assign]
    handlers.receive = receive
    pipeline.process = process
    settlement.forwarded_group = forwarded_group  # type: ignore[assignment]

    def undo() -> None:
        counter.add = original_add  # type: ignore[method-assign]
        handlers.receive = original_receive
        pipeline.process = original_process
        settlement.forwarded_group = original_group

    return undo


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    sites = "--sites" in argv
    argv = [a for a in argv if a != "--sites"]
    attribution = Attribution()
    undo = attribute(attribution, sites=sites)
    summary = io.StringIO()
    try:
        verdict = demo.run(demo.build_parser().parse_args(argv), out=summary)
    finally:
        undo()
    print(summary.getvalue().rstrip())
    print()
    print(attribution.report())
    sys.exit(verdict)


if __name__ == "__main__":
    main()
