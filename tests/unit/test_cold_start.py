"""Indexing the functions at a cold start loads no adapter: the host may pull the first message
sooner, and the first message pays for the imports instead (figures in BENCHMARKS.md)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ["msal", "requests", "azure.core", "azure.data", "azure.servicebus", "pydantic_settings", "opentelemetry"]
PROBE = (
    "import json, sys; import function_app; "
    f"print(json.dumps(sorted(m for m in sys.modules if any(m == a or m.startswith(a + '.') for a in {ADAPTERS!r}))))"
)


def test_importing_function_app_loads_no_adapter():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(result.stdout) == []


def test_every_function_is_still_registered():
    probe = "import function_app; print(len(function_app.app.get_functions()))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert int(result.stdout) == 8 + 3 + 14 + 2  # inbound flows, Event Grid consumers, operations endpoints, console
