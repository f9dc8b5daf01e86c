"""The deployment package: the app packed as Core Tools packs it (honouring .funcignore), and
nothing of dev tooling or local state in it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pathspec
import pytest

from devtools.package import CoreToolsIgnore, package_files

ROOT = Path(__file__).resolve().parents[2]

# What a developer's checkout holds besides the repository: logs, settings, Azurite's files,
# certificates and keys, caches and virtualenvs, at the root and deeper.
LOCAL_STATE = [
    "demo.log",
    "chaos.log",
    "telemetry_volume.log",
    "shared/debug.log",
    "emulator.settings.json",
    "local.settings.json",
    ".env",
    "__azurite_db_table__.json",
    "__blobstorage__/abc",
    "__queuestorage__/def",
    "azurite/__azurite_db_blob__.json",
    "fo.pem",
    "certs/fo-client.pem",
    "fo.key",
    "certs/fo-client.key",
    "client.pfx",
    "shared/__pycache__/settings.cpython-311.pyc",
    "__pycache__/function_app.cpython-311.pyc",
    "functions/__pycache__/inbound.cpython-311.pyc",
    ".venv/bin/python",
    ".venv-checkov/bin/checkov",
    ".python_packages/lib/site-packages/x.py",
    ".pytest_cache/v/cache/lastfailed",
    ".mypy_cache/3.11/x.json",
    ".ruff_cache/x",
    ".hypothesis/examples/x",
    "node_modules/azurite/package.json",
    ".vscode/settings.json",
]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as a developer has it after `make demo`, `make test` and a local func start."""
    root = tmp_path_factory.mktemp("app")
    shutil.rmtree(root)
    shutil.copytree(
        ROOT, root, ignore=shutil.ignore_patterns(".git", ".venv", ".venv-checkov", "node_modules", "__pycache__", "*_cache")
    )
    for name in LOCAL_STATE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("local state")
    return root


def test_the_package_holds_the_app_and_nothing_else(checkout, capsys):
    packed = package_files(checkout)
    with capsys.disabled():
        print(f"\ndeployment package ({len(packed)} files):\n  " + "\n  ".join(packed))
    app = {"function_app.py", "host.json", "requirements.txt"}
    code = {
        p.relative_to(checkout).as_posix()
        for folder in ("functions", "shared")
        for p in (checkout / folder).rglob("*")
        if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts
    }
    # The operator console's static files, served by functions/console.py.
    code |= {p.relative_to(checkout).as_posix() for p in (checkout / "console").rglob("*") if p.is_file()}
    assert set(packed) == app | code
    assert "shared/topology.json" in packed  # read at run time by shared/topology.py
    assert not set(LOCAL_STATE) & set(packed)


def test_core_tools_patterns_are_anchored_at_the_root():
    # The property that makes `**/` twins necessary: Core Tools' parser is not git's.
    rules = CoreToolsIgnore("__pycache__\n*.pem\n**/*.key\n!keep.pem\n# a comment\n/rooted.txt\n")
    assert not rules.accepts("__pycache__/x.pyc")
    assert rules.accepts("shared/__pycache__/x.pyc")  # git would ignore it; Core Tools does not
    assert not rules.accepts("fo.pem") and rules.accepts("certs/fo.pem")
    assert not rules.accepts("certs/fo.key") and rules.accepts("fo.key")  # "**" needs one folder at least
    assert rules.accepts("keep.pem")  # a negated pattern wins
    assert not rules.accepts("rooted.txt")
    assert rules.accepts("shared/settings.py")
    assert CoreToolsIgnore("").accepts("anything/at/all.py")


def test_word_boundaries_as_core_tools_applies_them():
    rules = CoreToolsIgnore("devtools\ndemo.log\n")
    assert not rules.accepts("devtools/demo.py") and not rules.accepts("demo.log")
    assert rules.accepts("devtools_extra/x.py")  # "\b" does not fall between "s" and "_"


def test_azd_reading_funcignore_with_git_rules_packs_the_same_files(checkout):
    # azd reads .funcignore for zip deploy too, with git's rules (github.com/Azure/azure-dev/pull/5383);
    # the `**/` twins keep both readings in step.
    rules = pathspec.PathSpec.from_lines("gitignore", (checkout / ".funcignore").read_text().splitlines())
    every = [p.relative_to(checkout).as_posix() for p in checkout.rglob("*") if p.is_file()]
    kept = {p for p in every if not rules.match_file(p) and p != "local.settings.json"}
    assert kept == set(package_files(checkout))
