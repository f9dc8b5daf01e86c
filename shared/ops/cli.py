"""The operations from a shell, with the app settings in the environment:

    python -m shared.ops.cli trace --company USMF --id line3-000123
    python -m shared.ops.cli order --company USMF --order P000123
    python -m shared.ops.cli parked [--flow F] [--reason R] [--order P1] [--older-than-s 3600] [--max-attempts 2]
    python -m shared.ops.cli resubmit --company USMF --id line3-000123 [--payload fixed.json] [--alone]
    python -m shared.ops.cli resubmit-parked --reason rejected --dry-run          (a filter is required)
    python -m shared.ops.cli resubmit-parked --reason rejected --expect 3 [--include-in-doubt]
    python -m shared.ops.cli cancel --company USMF --id line3-000123 --reason "sent twice by the MES"
    python -m shared.ops.cli confirm --company USMF --id line3-000123 --note "Message processor messages: 5531" [--alone]

An in-doubt message that travelled in one F&O message with others (per-order aggregation) is
confirmed or resubmitted with every member still in doubt under that F&O message; the answer lists
them (acted_on) and the members left alone (left_alone). --alone acts on the named message only.
    python -m shared.ops.cli release-gap --company USMF --order P000123 --missing 4 --reason "lost on the line PC"
    python -m shared.ops.cli lineage --company USMF --item FG-1 --batch B1 [--direction downstream] [--depth 5]
    python -m shared.ops.cli dead-lettered [--flow material_consumed]
    python -m shared.ops.cli resubmit-dead-lettered --flow material_consumed --sequence 42
    python -m shared.ops.cli health
    python -m shared.ops.cli upgrade          (once, after upgrading: genealogy moved, held messages indexed)

Answers are the JSON the HTTP operations return (shared/ops/operations.py shapes both), errors too.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from shared import runtime
from shared.ops import operations
from shared.ops.health import health
from shared.runtime import Ports
from shared.store.ledger import Ledger
from shared.store.lineage import move_legacy
from shared.store.tables import LEDGER_TABLE, LEGACY_LINEAGE_TABLE, service_client, table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.ops.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, *options: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name)
        for option in options:
            command.add_argument(f"--{option}", required=option not in ("payload", "direction", "depth"))
        return command

    add("trace", "company", "id")
    add("order", "company", "order")
    for name in ("parked", "resubmit-parked"):
        command = commands.add_parser(name)
        for option in ("company", "flow", "reason", "order", "older-than-s", "max-attempts"):
            command.add_argument(f"--{option}")
    bulk = commands.choices["resubmit-parked"]
    bulk.add_argument("--dry-run", action="store_true", help="say what would be resubmitted, change nothing")
    bulk.add_argument("--expect", type=int, help="the number of messages the dry run counted")
    bulk.add_argument("--include-in-doubt", action="store_true", help="in-doubt messages too (check F&O first)")
    add("resubmit", "company", "id", "payload")
    add("cancel", "company", "id", "reason")
    add("confirm", "company", "id", "note")
    for name in ("resubmit", "confirm"):
        commands.choices[name].add_argument(
            "--alone",
            action="store_true",
            help="this MES message only, not the other members of the merged F&O message it travelled in",
        )
    add("release-gap", "company", "order", "missing", "reason")
    add("lineage", "company", "item", "batch", "direction", "depth")
    dead = commands.add_parser("dead-lettered")
    dead.add_argument("--flow")
    add("resubmit-dead-lettered", "flow", "sequence")
    commands.add_parser("health")
    commands.add_parser(
        "upgrade",
        help="after upgrading from an earlier version: copy the genealogy of the former <prefix>Lineage table into "
        "the ledger table, and index the messages that wait or are parked (idempotent)",
    )
    return parser


def _filter(args: argparse.Namespace) -> operations.ParkedFilter:
    return operations.parked_filter(
        {
            "company": args.company,
            "flow": args.flow,
            "reason": args.reason,
            "order": args.order,
            "older_than_s": args.older_than_s,
            "max_attempts": args.max_attempts,
        }
    )


def run(args: argparse.Namespace, ports: Ports) -> Any:
    who = f"{getpass.getuser()} (cli)"
    if args.command == "trace":
        return operations.trace(ports.ledger, args.company, args.id)
    if args.command == "order":
        return operations.order_story(ports.ledger, args.company, args.order)
    if args.command == "parked":
        return operations.parked(ports.ledger, _filter(args))
    if args.command == "resubmit-parked":
        selection = operations.Selection(where=_filter(args), include_in_doubt=args.include_in_doubt)
        return operations.bulk(
            ports.ledger, ports.requeue, selection, "resubmit", dry_run=args.dry_run, expect=args.expect, who=who
        )
    if args.command == "resubmit":
        payload = Path(args.payload).read_bytes() if args.payload else None
        return operations.resubmission_reply(
            operations.resubmit(ports.ledger, ports.requeue, args.company, args.id, payload=payload, who=who, alone=args.alone)
        )
    if args.command == "cancel":
        return operations.cancel(ports.ledger, args.company, args.id, args.reason, who=who)
    if args.command == "confirm":
        return operations.confirm_applied(
            ports.ledger, ports.gate, ports.lineage, ports.requeue, args.company, args.id, args.note, who=who, alone=args.alone
        )
    if args.command == "release-gap":
        progress, resubmitted = operations.release_gap(
            ports.gate,
            ports.ledger,
            ports.requeue,
            args.company,
            args.order,
            operations.whole_number(args.missing, operations.MISSING_REFUSAL),
            args.reason,
            who,
        )
        return operations.gap_released_reply(progress, resubmitted)
    if args.command == "dead-lettered":
        return operations.dead_lettered(ports.dead_letters, args.flow)
    if args.command == "resubmit-dead-lettered":
        return operations.resubmit_dead_lettered(
            ports.dead_letters, args.flow, operations.whole_number(args.sequence, operations.SEQUENCE_REFUSAL)
        )
    if args.command == "lineage":
        return operations.lineage(
            ports.lineage,
            args.company,
            args.item,
            args.batch,
            args.direction or "upstream",
            operations.whole_number(args.depth or "5", operations.DEPTH_REFUSAL),
        )
    if args.command == "upgrade":
        return upgrade(ports)
    return health(ports)


def upgrade(ports: Ports) -> dict[str, int]:
    """What an earlier version's tables lack: the genealogy where it is kept now, and an index row
    for each message that waits or is parked (the wake-up finds them by it). Safe to repeat."""
    service = service_client(ports.settings)
    prefix = ports.settings.tables_prefix
    moved = move_legacy(service.get_table_client(prefix + LEGACY_LINEAGE_TABLE), ports.lineage)
    ledger = Ledger(table(service, prefix + LEDGER_TABLE))
    indexed = 0
    for entry in ledger.held_without_index():
        ledger.index_held(entry)
        indexed += 1
    return {"moved_edges": moved, "indexed_held_messages": indexed}


def main(argv: list[str] | None = None, ports: Ports | None = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    try:
        answer = run(args, ports or runtime.ports())
    except operations.OperationError as exc:
        print(json.dumps(operations.error_reply(exc)), file=out)
        return 1
    print(json.dumps(answer, indent=2, default=str), file=out)
    return 0 if args.command != "health" or answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
