"""The operator console in a real browser (Debian's headless Chromium, driven by Playwright) against
the local stack: the function app's HTTP functions behind the stand-in for App Service
authentication, the local host, the F&O emulator and Azurite.

With CONSOLE_SCREENSHOTS=<dir> the tests also save a screenshot of each page there (docs/console).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import function_app
from devtools import mes
from devtools.console_server import ConsoleServer
from devtools.operator_cases import Cases, seed, send, wait_for
from shared.store.ledger import State

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt: run make setup")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make setup` installs Debian's chromium (or set CHROMIUM)")
    with playwright_api.sync_playwright() as driver:
        instance = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def console(stack) -> Iterator[tuple[ConsoleServer, Cases]]:
    # F&O's processed events are not subscribed (the business event not activated yet): an
    # in-doubt message F&O applied then waits for the operator to confirm it.
    with stack.host, ConsoleServer(function_app.app) as server:
        cases = seed(stack.broker, stack.host, stack.emulator, stack.ports, applied=True)
        # The order gate parks the message behind the gap after GATE_GAP_TIMEOUT_S (3 s here).
        wait_for(stack.ports, "USMF", cases.gap_message["message_id"], {State.PARKED})
        yield server, cases


@pytest.fixture
def page(browser, console) -> Iterator[Any]:
    server, _ = console
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.goto(server.console_url)
    # Not signed in: App Service authentication (here its stand-in) sends the browser to sign in.
    tab.get_by_label("Your name").fill("Ada Night-Shift")
    tab.get_by_role("button", name="Sign in").click()
    playwright_api.expect(tab.locator("#who")).to_have_text("Ada Night-Shift")
    yield tab
    context.close()
    assert problems == [], problems  # no script error, no request the Content-Security-Policy refused


def shot(tab: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def test_overview_then_parked_then_edit_and_resubmit_a_rejected_message_until_it_is_forwarded(page, console, stack):
    expect = playwright_api.expect
    _, cases = console
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    flows = page.get_by_role("table", name="Messages per flow")
    expect(flows.get_by_role("row", name="inventory_moved")).to_contain_text("rejected 1")
    expect(flows.get_by_role("row", name="material_consumed")).to_contain_text("invalid_message 1")
    expect(page.get_by_text("✓ table storage")).to_be_visible()
    expect(page.get_by_role("img", name="Messages forwarded per 5 minutes")).to_be_visible()
    shot(page, "overview")

    page.get_by_role("link", name="Parked & dead-lettered").click()
    parked = page.get_by_role("table", name="Parked messages")
    # rejected, invalid, the gap (parked after GATE_GAP_TIMEOUT_S) and the in-doubt consumptions
    expect(parked.get_by_role("row")).to_have_count(1 + 3 + 1 + len(cases.in_doubt_others))
    page.get_by_label("Reason", exact=True).select_option("rejected")
    page.get_by_role("button", name="Filter", exact=True).click()
    parked = page.get_by_role("table", name="Parked messages matching the filter")
    expect(parked.get_by_role("row")).to_have_count(2)
    shot(page, "parked")

    parked.get_by_role("link", name=cases.rejected_move["message_id"]).click()
    expect(page.get_by_role("heading", name=f"Message {cases.rejected_move['message_id']}")).to_be_visible()
    expect(page.get_by_text("Warehouse 99 does not belong to site 1").first).to_be_visible()
    # The F&O request the payload makes: the transfer journal's header and line in one changeset.
    request = page.get_by_role("heading", name="Request (what the bridge sends F&O for this payload)")
    expect(request.locator("xpath=following-sibling::pre[1]")).to_contain_text('"kind": "Changeset"')
    expect(request.locator("xpath=following-sibling::pre[1]")).to_contain_text("InventoryTransferJournalEntries")
    editor = page.get_by_label("Payload (checked against")
    text = editor.input_value()
    # The page checks the edit against the MES schema and the message's identity before sending.
    editor.fill(text.replace('"from_warehouse": "99"', '"from_warehouse": ""'))
    expect(page.locator("#payload-problems")).to_contain_text("body.from_warehouse: at least 1 character(s)")
    expect(page.get_by_role("button", name="Resubmit edited message")).to_be_disabled()
    editor.fill(text.replace(cases.rejected_move["message_id"], "another-id"))
    expect(page.locator("#payload-problems")).to_contain_text("message id: may not change")
    editor.fill(text.replace('"from_warehouse": "99"', '"from_warehouse": "11"'))
    expect(page.locator("#payload-problems")).to_contain_text("Valid against the MES schema.")
    shot(page, "message")
    page.get_by_role("button", name="Resubmit edited message").click()
    expect(page.locator(".lead .badge").first).to_have_text("Forwarded", timeout=30_000)
    entry = stack.ports.ledger.get("USMF", cases.rejected_move["message_id"])
    assert entry.state is State.FORWARDED and entry.extra["EditedBy"] == "Ada Night-Shift"  # the signed-in operator
    assert len(stack.emulator.app.tables["InventoryTransferJournalHeaders"]) == 1


def test_a_bulk_resubmit_leaves_in_doubt_out_then_an_in_doubt_one_is_confirmed_and_its_order_moves_on(page, console, stack):
    expect = playwright_api.expect
    _, cases = console
    doubtful = cases.in_doubt
    page.goto(page.url.split("#")[0] + "#/parked?reason=in_doubt")
    parked = page.get_by_role("table", name="Parked messages matching the filter")
    expect(parked.get_by_role("row")).to_have_count(1 + 1 + len(cases.in_doubt_others))
    # Everything matching: the dry run says what would happen and leaves the in-doubt rows out.
    page.get_by_role("button", name="Resubmit all matching the filter…").click()
    dialog = page.get_by_role("dialog", name="Resubmit: what will happen")
    expect(dialog).to_contain_text("0 message(s) will be resubmitted")
    expect(dialog).to_contain_text("in doubt (include_in_doubt not set)")
    expect(dialog.get_by_role("button", name="Resubmit 0 message(s)")).to_be_disabled()
    shot(page, "bulk-dry-run")
    page.keyboard.press("Escape")  # a dialog closes from the keyboard, and nothing was changed
    expect(page.locator("#status")).to_have_text("Nothing was changed.")
    assert stack.ports.ledger.get("USMF", doubtful["message_id"]).extra.get("Resubmissions") is None

    row = parked.get_by_role("row").filter(has_text=doubtful["message_id"])
    row.get_by_role("button", name="Confirm in F&O…").click()
    confirm = page.get_by_role("dialog", name=f"Confirm {doubtful['message_id']} is in F&O")
    confirm.get_by_label("Where F&O shows it (required)").fill("Message processor messages: Processed")
    confirm.get_by_role("button", name="Confirm applied in F&O").click()
    expect(page.locator("#status")).to_have_text(f"{doubtful['message_id']} confirmed: Forwarded.")
    expect(parked.get_by_role("row")).to_have_count(1 + len(cases.in_doubt_others))
    entry = stack.ports.ledger.get("USMF", doubtful["message_id"])
    assert entry.state is State.FORWARDED and entry.detail.startswith("confirmed in F&O by Ada Night-Shift")

    # The order page: its ladder shows the confirmed consumption; the gap order shows where it waits.
    page.get_by_role("link", name="Order").click()
    page.get_by_label("Production order").fill(cases.gap_order)
    page.get_by_role("button", name="Show").click()
    ladder = page.get_by_role("list", name="MES sequence")
    expect(ladder.get_by_role("listitem")).to_have_count(3)
    expect(ladder.get_by_role("listitem").nth(1)).to_contain_text("not received from the MES")
    shot(page, "order")
    page.get_by_role("button", name="Release gap #2…").click()
    release = page.get_by_role("dialog", name="Release gap #2?")
    release.get_by_label("Why will the MES never send it? (required)").fill("line PC lost it")
    release.get_by_role("button", name="Release #2").click()
    expect(page.locator("#status")).to_contain_text("Released #2; resubmitted 1 message(s).")
    wait_for(stack.ports, "USMF", cases.gap_message["message_id"], {State.FORWARDED, State.PROCESSED})
    page.reload()
    expect(ladder.get_by_role("listitem").nth(2)).to_contain_text("Forwarded")
    expect(ladder.get_by_role("listitem").nth(1)).to_contain_text("skipped")


def test_a_lineage_graph_opens_and_its_nodes_lead_to_the_order_and_the_batch(page, console):
    expect = playwright_api.expect
    _, cases = console
    page.get_by_role("link", name="Lineage").click()
    page.get_by_label("Item").fill(cases.finished_item)
    page.get_by_label("Batch").fill(cases.finished_batch)
    page.get_by_role("button", name="Show").click()
    graph = page.get_by_role("group", name="upstream genealogy graph")
    expect(graph).to_be_visible()
    expect(graph.get_by_role("link", name="batch RM-0001 B0001-002")).to_be_visible()
    shot(page, "lineage")
    # Nodes are links: reachable with the keyboard, each to its order or its batch.
    order = graph.get_by_role("link", name=f"production order {cases.finished_order}")
    order.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Order {cases.finished_order}")).to_be_visible()
    expect(page.get_by_role("list", name="MES sequence").get_by_role("listitem")).to_have_count(4)
    page.go_back()
    graph.get_by_role("link", name="batch RM-0002 B0002-001").click()
    expect(page.get_by_role("heading", name="Lineage of RM-0002 B0002-001")).to_be_visible()
    page.get_by_label("Direction").select_option("downstream")
    page.get_by_role("button", name="Show").click()
    downstream = page.get_by_role("group", name="downstream genealogy graph")
    expect(downstream.get_by_role("link", name=f"production order {cases.finished_order}")).to_be_visible()
    expect(downstream.get_by_role("link", name=f"batch {cases.finished_item} {cases.finished_batch}")).to_be_visible()


def test_readable_on_a_tablet_and_the_console_refuses_outside_content(browser, console):
    expect = playwright_api.expect
    server, cases = console
    tablet = browser.new_context(viewport={"width": 820, "height": 1180}, has_touch=True)
    tab = tablet.new_page()
    refused: list[str] = []
    tab.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    tab.goto(server.console_url)
    tab.get_by_label("Your name").fill("Bo Tablet")
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.get_by_role("table", name="Messages per flow")).to_be_visible()
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scrolling
    shot(tab, "overview-tablet")
    # A script from elsewhere is refused by the page's Content-Security-Policy.
    tab.evaluate(
        "() => { const s = document.createElement('script'); s.src = 'https://cdn.example.invalid/x.js'; document.head.append(s); }"
    )
    tab.wait_for_timeout(300)
    assert any("cdn.example.invalid" in text for text in refused), refused
    tab.goto(f"{server.console_url}#/message/USMF/{cases.invalid['message_id']}")
    expect(tab.get_by_role("heading", name=f"Message {cases.invalid['message_id']}")).to_be_visible()
    expect(tab.locator("#payload-problems")).to_contain_text("body.lines[0].quantity: at least 0")
    tablet.close()


def test_markup_in_a_message_is_shown_as_text(page, console, stack):
    expect = playwright_api.expect
    hostile = mes.event(
        "material_consumed",
        "P000014",
        {"lines": [{"item_number": "<img src=x onerror=document.title='owned'>", "quantity": 1}]},
        correlation_id="<script>document.title='owned'</script>",
    )
    send(stack.broker, hostile)
    wait_for(stack.ports, "USMF", hostile["message_id"], {State.PARKED})
    page.goto(page.url.split("#")[0] + f"#/message/USMF/{hostile['message_id']}")
    expect(page.get_by_role("heading", name=f"Message {hostile['message_id']}")).to_be_visible()
    expect(page.get_by_text("<img src=x onerror=").first).to_be_visible()
    assert page.locator("main img, main script").count() == 0
    assert page.title() != "owned"


def plant_merged_in_doubt(stack: Any, order: str, sequences: list[int]) -> list[str]:
    """Ledger rows as per-order aggregation leaves them when a merged F&O message got no answer:
    every member parked in doubt, naming the one F&O message (shared/inbound/aggregate.py)."""
    from shared.inbound.aggregate import story
    from shared.store.ledger import LedgerEntry, payload_hash

    documents = [
        mes.event(
            "material_consumed",
            order,
            {"lines": [{"item_number": "RM-0001", "batch_number": "B0001-005", "quantity": float(n)}]},
            sequence=n,
        )
        for n in sequences
    ]
    ids = [d["message_id"] for d in documents]
    told = story(ids[0], ids, len(ids), "merged-content-hash")
    for document in documents:
        body = mes.encode(document)
        stack.ports.ledger.create(
            LedgerEntry(
                company="USMF",
                message_id=document["message_id"],
                state=State.PARKED,
                flow="material_consumed",
                reason="in_doubt",
                detail=f"no answer from F&O after sending; one F&O message for {len(ids)} MES messages",
                production_order=order,
                sequence=document["sequence"],
                payload_hash=payload_hash(body),
                payload_size=len(body),
                extra={"FoMessage": told, "ContentHash": "merged-content-hash", "Lineage": []},
            ),
            payload=body,
        )
    return ids


def test_an_in_doubt_merged_message_is_one_line_with_its_members_and_one_confirm_settles_them_all(page, console, stack):
    expect = playwright_api.expect
    _, cases = console
    ids = plant_merged_in_doubt(stack, "P000014", [2, 3, 4])
    page.goto(page.url.split("#")[0] + "#/parked?reason=in_doubt")
    parked = page.get_by_role("table", name="Parked messages matching the filter")
    # The seeded in-doubt consumptions one line each, the merged F&O message one line for its three members.
    expect(parked.get_by_role("row")).to_have_count(1 + 1 + len(cases.in_doubt_others) + 1)
    line = parked.get_by_role("row").filter(has_text="One F&O message")
    members = line.get_by_role("list", name=f"MES messages in F&O message {ids[0]}")
    expect(members.get_by_role("listitem")).to_have_count(3)
    for n, message_id in enumerate(ids):
        expect(members.get_by_role("listitem").nth(n)).to_have_text(f"{message_id} #{n + 2}")
    expect(line).to_contain_text("3 lines · 3 MES messages")
    # Selecting the line selects its members: a bulk action acts on all three.
    line.get_by_role("checkbox", name=f"Select F&O message {ids[0]} (3 messages)").check()
    expect(page.locator(".toolbar .count")).to_have_text("3 selected")
    shot(page, "parked-merged-in-doubt")

    # A member's own page offers the F&O message (the default) or this message only.
    members.get_by_role("link", name=ids[1]).click()
    expect(page.get_by_role("heading", name=f"Message {ids[1]}")).to_be_visible()
    page.get_by_role("button", name="Resubmit as is…").click()
    resubmit = page.get_by_role("dialog", name=f"Resubmit {ids[1]} as it is?")
    expect(resubmit).to_contain_text(f"It travelled in one F&O message with {ids[0]}, {ids[2]}")
    expect(resubmit.get_by_role("button", name="This message only")).to_be_visible()
    resubmit.get_by_role("button", name="Resubmit the F&O message (3)").focus()
    resubmit.get_by_role("button", name="Back").click()
    expect(resubmit).to_have_count(0)
    assert all(stack.ports.ledger.get("USMF", m).extra.get("Resubmissions") is None for m in ids)
    page.go_back()

    line.get_by_role("button", name="Confirm in F&O…").click()
    confirm = page.get_by_role("dialog", name=f"Confirm F&O message {ids[0]} is in F&O")
    expect(confirm).to_contain_text(", ".join(ids))
    confirm.get_by_label("Where F&O shows it (required)").fill("Message processor messages: Processed")
    confirm.get_by_role("button", name="Confirm 3 message(s) applied in F&O").click()
    expect(page.locator("#status")).to_have_text(f"{', '.join(ids)} confirmed: Forwarded.")
    expect(parked.get_by_role("row")).to_have_count(1 + 1 + len(cases.in_doubt_others))
    for message_id in ids:
        entry = stack.ports.ledger.get("USMF", message_id)
        assert entry.state is State.FORWARDED and entry.detail.startswith("confirmed in F&O by Ada Night-Shift")
    assert stack.ports.gate.read("USMF", "P000014").watermark == 4
