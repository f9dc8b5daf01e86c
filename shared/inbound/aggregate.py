"""Per-order aggregation in the ledger (issue 20): the waiting messages a send takes along, and the
rows that tie one F&O message to its MES messages.

What waits is what the order gate already holds: `Waiting` rows (reason `ordering`) of the same
order and flow, the direct successors in MES sequence of the message about to be sent. Nothing is
held back to be merged, and a send looks in the ledger only when the order's progress row says that
somebody waited (`Progress.waiting_for`), so at low load a send costs what it did. The one exception
is a send F&O's budget would hold anyway: with nothing to take along, it steps aside once for the
successors still on its session (`steps_aside`), and its copy takes them along.

Every member's row names the F&O message it travels in (`FoMessage`: head, members in MES order,
line count) and carries the merged content's hash, and the content index holds one row per member
under that hash. Both are written with the claim, before the POST: whatever happens after it (an
answer, none, a crash), F&O's processed event finds every member.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.inbound.dispatch import content_hash
from shared.inbound.mapping import MappingOptions, SendMessage
from shared.inbound.merge import LINE_LISTS, mergeable, mergeable_prefix, merged
from shared.inbound.messages import MesEvent
from shared.inbound.order_gate import Progress
from shared.inbound.wakeup import HeldLook
from shared.settings import Settings
from shared.store.ledger import LedgerEntry, LedgerStore, LostRace, State, content_index_row

if TYPE_CHECKING:
    from shared.inbound.flows import Flow

#: The row's extra that names the F&O message a MES message travelled in.
FO_MESSAGE = "FoMessage"
#: Set on the members of a merged message F&O refused: each goes alone from then on.
MERGE_REFUSED = "MergeRefused"  # one of the ledger's INDEXED_EXTRA: the held index says it too


@dataclass(frozen=True)
class Member:
    entry: LedgerEntry
    event: MesEvent


@dataclass(frozen=True)
class Group:
    """One F&O message and the MES messages it carries, the one being delivered first."""

    members: tuple[Member, ...]
    call: SendMessage
    content_hash: str

    @property
    def head(self) -> Member:
        return self.members[0]


def story(head: str, members: list[str], lines: int, content_hash: str) -> dict[str, Any]:
    return {"Head": head, "Members": members, "Lines": lines, "ContentHash": content_hash}


def members_of(entry: LedgerEntry) -> list[str]:
    """The MES message ids of the F&O message `entry` travelled in (itself alone when it went alone)."""
    told = entry.extra.get(FO_MESSAGE)
    members = told.get("Members") if isinstance(told, dict) else None
    return [str(m) for m in members] if isinstance(members, list) and members else [entry.message_id]


def head_of(entry: LedgerEntry) -> str:
    told = entry.extra.get(FO_MESSAGE)
    head = told.get("Head") if isinstance(told, dict) else None
    return str(head) if head else entry.message_id


def on_its_own(extra: Mapping[str, Any]) -> dict[str, Any]:
    """A row claimed again (an operator's resubmission of a parked member) is a send of its own: the
    F&O message it travelled in before stays in its story as `EarlierFoMessage`."""
    if FO_MESSAGE not in extra:
        return dict(extra)
    kept = {k: v for k, v in extra.items() if k not in (FO_MESSAGE, "ContentHash")}
    return {**kept, "EarlierFoMessage": extra[FO_MESSAGE]}


def worth_looking(progress: Progress, head: LedgerEntry) -> bool:
    """Whether anything of the order can be waiting: somebody noted a wait on the order's progress
    row, or this message itself waited (woken, or retried after an outage). A message that never
    waited, of an order nobody waits in, sends as before without a look in the ledger."""
    if progress.waiting_for is not None or progress.held:
        return True
    return _waited(head)


#: A send that would wait this long for F&O's budget steps aside for its successors (`steps_aside`):
#: F&O's budget is the bottleneck then (at 20 requests/s, five calls queue ahead of it), and the
#: step costs a few Table operations and one trip through the broker, well within the wait.
BUDGET_BOUND_S = 0.25


def may_merge(settings: Settings, entry: LedgerEntry, call: SendMessage) -> bool:
    """Whether `call` (of `entry`) may take successors along: merging is on, the message has a MES
    sequence, its type carries lines, and F&O never refused it in a merged message."""
    enabled = settings.fo_merge_max_messages > 1
    return enabled and entry.sequence is not None and mergeable(call) and not entry.extra.get(MERGE_REFUSED)


def steps_aside(settings: Settings, head: LedgerEntry, call: SendMessage, budget_wait_s: float) -> bool:
    """Whether `head`, found with nothing to take along, gives its turn back for its successors to
    join it: F&O's budget would hold it `budget_wait_s` anyway, and it never waited yet.

    Its successors of one flow come on one Service Bus session, one at a time: while the head holds
    the session (waiting for F&O's budget), the next ones stay in the broker, where nothing sees them.
    So the head goes back to `Waiting` and its copy behind them on the session: they come first, wait
    behind it in the order gate, and the copy takes them along (`gather`). Once per message, so each
    is held at most one trip through its queue; never at low load, where the budget has a slot."""
    return budget_wait_s >= BUDGET_BOUND_S and may_merge(settings, head, call) and not _waited(head)


def _waited(entry: LedgerEntry) -> bool:
    return any(step.get("state") == State.WAITING.value for step in entry.history)


def _may_join(entry: LedgerEntry, flow: str) -> bool:
    return (
        entry.state is State.WAITING
        and entry.flow == flow
        and entry.reason == "ordering"
        and entry.sequence is not None
        and not entry.extra.get(MERGE_REFUSED)
    )


def _waiting_run(look: HeldLook, head: LedgerEntry, flow: str, limit: int) -> list[tuple[LedgerEntry, bytes]]:
    """The order's Waiting rows of `flow` right after `head` in sequence, none skipped, each with its
    payload: chosen by the order's held index (a key range, not a filter over the company's
    partition), then only those read, the run ending at the first that changed meanwhile."""
    assert head.sequence is not None
    rows = [e for e in look.rows() if _may_join(e, flow)]
    counts = Counter(e.sequence for e in rows)
    by_sequence = {e.sequence: e for e in rows}
    chosen: list[LedgerEntry] = []
    wanted = head.sequence + 1
    # Two rows under one number are a conflict the gate settles: the run stops before them.
    while wanted in by_sequence and counts[wanted] == 1 and len(chosen) < limit - 1:
        chosen.append(by_sequence[wanted])
        wanted += 1
    run: list[tuple[LedgerEntry, bytes]] = []
    for expected, (entry, body) in zip(chosen, look.read(chosen), strict=False):
        if entry.message_id != expected.message_id or not _may_join(entry, flow) or entry.sequence != expected.sequence:
            break
        run.append((entry, body))
    return run


def gather(
    ledger: LedgerStore,
    settings: Settings,
    options: MappingOptions,
    flow: Flow,
    head: Member,
    call: SendMessage,
    lease_until: datetime,
    look: HeldLook,
) -> Group | None:
    """Claim the waiting successors `call` may carry, and record the group; None when it goes alone.
    `LostRace` when the head's own row changed meanwhile (as a plain forward would find). The order's
    held index is looked at through `look`, which the wake-up after the forward may reuse."""
    limit = settings.fo_merge_max_messages
    entry = head.entry
    if not may_merge(settings, entry, call):
        return None
    candidates: list[Member] = []
    calls: list[SendMessage] = [call]
    for row, body in _waiting_run(look, entry, entry.flow, limit):
        try:
            event = flow.event.model_validate_json(body)
        except ValueError:
            break
        mapped = flow.map(event, options)
        if not isinstance(mapped, SendMessage):
            break
        candidates.append(Member(row, event))
        calls.append(mapped)
    taken = mergeable_prefix(calls, max_messages=limit, max_content_bytes=settings.fo_merge_max_content_bytes)
    while taken > 1:
        members = (head, *candidates[: taken - 1])
        one = merged(calls[:taken])
        try:
            return _claim(ledger, flow, members, one, lease_until)
        except LostRace as lost:
            index = lost.args[1] if len(lost.args) > 1 else 0
            if index == 0:
                raise
            # That sibling moved meanwhile (its own copy came back): the run ends before it.
            taken = index
    return None


def _claim(ledger: LedgerStore, flow: Flow, members: tuple[Member, ...], call: SendMessage, until: datetime) -> Group:
    digest = content_hash(call)
    ids = [m.entry.message_id for m in members]
    lines = len(call.content[LINE_LISTS[call.message_type]])
    told = story(ids[0], ids, lines, digest)
    moves: list[tuple[LedgerEntry, State, dict[str, Any]]] = []
    for position, member in enumerate(members):
        entry = member.entry
        # The genealogy goes with the claim: F&O's processed event may settle a member before the
        # forward (or the in-doubt park) records anything else, and it catches up from the row.
        lineage = [asdict(edge) for edge in flow.lineage(member.event)]
        extra = {**entry.extra, FO_MESSAGE: told, "ContentHash": digest, "Lineage": lineage}
        if position == 0:
            changes: dict[str, Any] = {"reason": entry.reason, "detail": entry.detail, "extra": extra, "lease_until": until}
        else:
            detail = f"taken along by {ids[0]}: one F&O message for {len(ids)} MES messages of {entry.production_order}"
            changes = {"reason": "", "detail": detail, "extra": extra, "lease_until": until, "attempts": entry.attempts + 1}
        moves.append((entry, State.FORWARDING, changes))
    index = [content_index_row(m.entry.company, digest, m.entry.message_id, call.message_type) for m in members]
    claimed = ledger.transition_together(moves, index)
    return Group(tuple(Member(e, m.event) for e, m in zip(claimed, members, strict=True)), call, digest)


def release(ledger: LedgerStore, group: Group, *, refused: str = "") -> LedgerEntry:
    """Undo the group before anything reached F&O (F&O refused the merged message, or a transient
    fault): the head back to a plain claim, the others back to Waiting for their turn. With
    `refused`, none of them is merged again (each goes alone and only the bad one is parked)."""
    moves: list[tuple[LedgerEntry, State, dict[str, Any]]] = []
    for position, member in enumerate(group.members):
        entry = member.entry
        extra = {k: v for k, v in entry.extra.items() if k not in (FO_MESSAGE, "ContentHash")}
        if refused:
            extra[MERGE_REFUSED] = refused
        if position == 0:
            moves.append((entry, State.FORWARDING, {"reason": "", "detail": entry.detail, "extra": extra}))
        else:
            detail = (
                f"F&O refused the merged message; this one goes alone after {group.head.entry.message_id}"
                if refused
                else f"waiting for {group.head.entry.message_id}, which is retried"
            )
            moves.append((entry, State.WAITING, {"reason": "ordering", "detail": detail, "extra": extra, "lease_until": None}))
    return ledger.transition_together(moves)[0]
