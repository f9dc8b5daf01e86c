"""What a deployment package holds: the app's files as Azure Functions Core Tools picks them.

Core Tools (`func azure functionapp publish`, `func pack`) walks the app folder, skips the
folders `.git` and `.vscode` and the files `.funcignore`, `.gitignore`, `appsettings.json`,
`local.settings.json` and `project.lock.json`, and keeps each remaining file whose path (relative,
with `/`) its `.funcignore` parser accepts (src/Cli/func/Common/FileSystemHelpers.cs GetLocalFiles,
src/Cli/func/Common/GitIgnoreParser.cs in Azure/azure-functions-core-tools). That parser is a port
of codemix/gitignore-parser, not git's own rules; `CoreToolsIgnore` reproduces it regex for regex.

`python -m devtools.package` lists what would be deployed from the current folder.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

SKIPPED_FOLDERS = frozenset({".git", ".vscode"})
SKIPPED_FILES = frozenset({".funcignore", ".gitignore", "appsettings.json", "local.settings.json", "project.lock.json"})


def _escape(pattern: str) -> str:
    # PrepareRegexPattern: escape regex characters, then "**" -> "(.+)" and "*" -> "([^\/]+)".
    escaped = re.sub(r"[\-\[\]/{}()+?.\\^$|]", lambda m: "\\" + m.group(0), pattern)
    return escaped.replace("**", "(.+)").replace("*", r"([^\/]+)")


class CoreToolsIgnore:
    """Core Tools' .funcignore matcher: positive and negated patterns, each anchored at the root."""

    def __init__(self, text: str) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in text.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            line = line.removeprefix("!").removeprefix("/")
            (negative if negated else positive).append(line)
        self._positive = self._compile(sorted(positive))
        self._negative = self._compile(sorted(negative))

    @staticmethod
    def _compile(patterns: list[str]) -> re.Pattern[str] | None:
        if not patterns:
            return None  # Core Tools compiles "$^": matches nothing
        return re.compile("^((" + ")|(".join(_escape(p) for p in patterns) + r"))\b")

    def accepts(self, path: str) -> bool:
        path = "" if path == "/" else path
        if self._negative is not None and self._negative.search(path):
            return True
        return self._positive is None or not self._positive.search(path)


def package_files(root: Path) -> list[str]:
    """Relative paths (with `/`) of the files Core Tools would put in the package, sorted."""
    funcignore = root / ".funcignore"
    matcher = CoreToolsIgnore(funcignore.read_text()) if funcignore.is_file() else None
    return sorted(path for path in _walk(root) if matcher is None or matcher.accepts(path))


def _walk(root: Path) -> Iterator[str]:
    for folder, folders, files in os.walk(root):
        folders[:] = [f for f in folders if f not in SKIPPED_FOLDERS]
        for name in files:
            if name not in SKIPPED_FILES:
                yield (Path(folder) / name).relative_to(root).as_posix()


def main(argv: list[str] | None = None) -> int:
    root = Path((argv or sys.argv[1:] or ["."])[0]).resolve()
    for path in package_files(root):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
