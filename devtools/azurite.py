"""Start Azurite's Table service (from the project's node_modules) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Azurite's documented development account: public, the same on every machine, not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def proc_cpu_s(stat: Path) -> float | None:
    """CPU seconds (user + system) of the process or thread whose /proc stat file this is, None
    where there is none (not Linux, or gone)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


class Azurite:
    """`with Azurite() as azurite:` gives `azurite.connection_string`, stopped on exit.

    In memory by default; `persistent=True` keeps the tables in a temporary folder, so they
    survive `restart()` as Table Storage's data survives an outage."""

    def __init__(self, port: int | None = None, *, persistent: bool = False, node_options: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        #: Options for Node.js itself (`--cpu-prof`, say): Azurite then runs under `node` named here.
        self.node_options = node_options
        self.persistent = persistent
        self.connection_string = connection_string(self.port)
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="azurite-")

    def _command(self) -> list[str]:
        local = ROOT / "node_modules" / ".bin" / "azurite-table"
        binary = str(local) if local.exists() else shutil.which("azurite-table")
        if binary is None:
            raise RuntimeError("Azurite is not installed: run `make setup` (npm installs it into node_modules)")
        node = ["node", *self.node_options, str(Path(binary).resolve())] if self.node_options else [binary]
        return [
            *node,
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(self.port),
            *(["--location", self._workdir.name] if self.persistent else ["--inMemoryPersistence"]),
            "--silent",
            "--skipApiVersionCheck",
        ]

    def start(self, timeout: float = 30.0) -> Azurite:
        self._process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self._workdir.name
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"Azurite exited at start: {error.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Azurite did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None and self.node_options:
            # Node writes what its options asked for (a CPU profile) only on an orderly exit: SIGINT.
            self._process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=30)
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None
        self._workdir.cleanup()

    def restart(self) -> None:
        """Stop and start on the same port: an outage of Table Storage (in memory, the tables are gone too)."""
        if self._process is not None:
            # SIGINT is Azurite's graceful close: it saves the tables before exiting (SIGTERM does not).
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self.start()

    def cpu_s(self) -> float | None:
        """CPU seconds Azurite has used so far (its one Node.js thread serves every call), None
        when stopped or where /proc is not there."""
        return proc_cpu_s(Path(f"/proc/{self._process.pid}/stat")) if self._process is not None else None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
