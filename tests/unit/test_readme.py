"""The README's tables and diagrams against the code they describe, so that neither drifts alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import shared.inbound.pipeline
from devtools.schemas import example
from functions import INBOUND
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.mapping import Changeset, MappingOptions, SendMessage, ServiceCall
from shared.store.tables import TABLES
from shared.topology import INBOUND_QUEUES

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def table_after(header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line starts with `header`, as cells."""
    lines = README[README.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


FLOW_TABLE = {row[0]: row for row in table_after("| flow (function) |")}


def test_the_flow_table_names_every_flow_its_function_and_its_queue():
    functions = {module.__name__.rpartition(".")[2] for module in INBOUND}
    assert set(FLOW_TABLE) == set(INBOUND_FLOWS) == set(INBOUND_QUEUES) == functions
    assert {name: row[1] for name, row in FLOW_TABLE.items()} == INBOUND_QUEUES


@pytest.mark.parametrize("name", sorted(INBOUND_FLOWS))
def test_the_flow_table_says_what_the_flow_calls_in_fo_and_whether_a_repeat_is_safe(name):
    flow = INBOUND_FLOWS[name]
    _name, _queue, _event, fo_call, repeat_safe = FLOW_TABLE[name]
    assert repeat_safe.startswith("yes") == flow.repeatable, (
        f"README says {repeat_safe!r}; shared/inbound/flows.py says {flow.repeatable}"
    )
    call = flow.map(flow.event.model_validate(example(name)), MappingOptions())
    if isinstance(call, SendMessage):
        assert fo_call == f"SendMessage `{call.message_type}`"
    elif isinstance(call, ServiceCall):
        assert fo_call.startswith("custom service `FO_QUALITY_SERVICE_PATH`")
    else:
        assert isinstance(call, Changeset) and fo_call.startswith("OData `$batch` changeset")


def steps(block: str, indent: str) -> list[str]:
    """The step names of a pipeline drawing: the text after `indent` up to the first double space."""
    return [line[len(indent) :].split("  ")[0].strip() for line in block.splitlines() if line.startswith(indent)]


def test_the_readme_draws_the_pipeline_in_the_order_the_code_runs_it():
    docstring = shared.inbound.pipeline.__doc__ or ""
    in_code = steps(docstring.split("\n\n")[1], "    ")
    drawing = README[README.index("## The pipeline (`shared/inbound/pipeline.py`)") :].split("```")[1]
    assert steps(drawing, "  -> ") == in_code, "README's pipeline drawing against shared/inbound/pipeline.py's docstring"
    assert in_code[:3] == ["decode + validate", "order gate", "claim in ledger"]  # the gate decides before the row is written
    [overview] = re.findall(r"one pipeline:<br/>([^}]*)\}\}", README)
    assert [s.split()[-1] for s in overview.split(" · ")] == ["validate", "gate", "ledger", "send", "lineage"]


def test_the_tables_the_readme_names_are_the_tables_the_bridge_keeps():
    [row] = [r for r in table_after("| setting |") if r[0] == "`TABLES_PREFIX`"] or [[]]
    assert re.findall(r"`<prefix>(\w+)`", row[2]) == list(TABLES)
    runtime = (ROOT / "shared" / "runtime.py").read_text()
    assert not re.search(r'prefix \+ "', runtime), "name tables with shared.store.tables' constants (and list them in TABLES)"


def test_every_reference_the_code_cites_is_in_the_repository():
    cited: set[str] = set()
    for folder in ("shared", "functions", "devtools", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            cited |= set(re.findall(r"docs/reference/[\w.-]+\.md", text))
            assert not re.search(r"(?<!docs/)\breference/[\w.-]+\.md", text), f"{path}: cite docs/reference/..."
    cited |= set(re.findall(r"docs/reference/[\w.-]+\.md", README))
    assert cited and all((ROOT / name).is_file() for name in cited), cited


def test_every_file_a_docstring_or_comment_names_is_in_the_repository():
    # Paths of the repository's own files; globs, elisions ("...") and the
    # package test's made-up paths (what Core Tools would pack) are not citations.
    named = re.compile(r"\b(?:shared|functions|devtools|tests|docs|infra|console|schemas)/[\w./-]+\.(?:py|md|json|bicep|js)\b")
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for folder in ("shared", "functions", "devtools", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "test_package.py"
        for name in named.findall(path.read_text())
        if "*" not in name and "..." not in name and not (ROOT / name).exists()
    }
    assert not missing, sorted(missing)
