"""How fast is the F&O emulator? `python -m devtools.emulator_speed` prints SendMessage requests/s
at 0 ms and 50 ms emulated latency, with the emulator in its own process (as the benchmark runs it)."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.fo.http import PinnedTrustSession


def measure(latency_ms: float, calls: int, connections: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        settings_file = Path(directory) / "settings.json"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.fo_emulator",
                "--port",
                "0",
                "--settings-out",
                str(settings_file),
                "--latency-ms",
                str(latency_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            process.stdout.readline()
            while not settings_file.exists():
                time.sleep(0.05)
            values = json.loads(settings_file.read_text())["Values"]
            session = PinnedTrustSession(values["FO_CA_BUNDLE"], pool_size=connections)
            form = {
                "grant_type": "client_credentials",
                "client_id": values["FO_CLIENT_ID"],
                "client_secret": values["FO_CLIENT_SECRET"],
                "scope": values["FO_BASE_URL"] + "/.default",
            }
            token_url = f"{values['FO_BASE_URL']}/{values['FO_TENANT_ID']}/oauth2/v2.0/token"
            headers = {"Authorization": "Bearer " + session.post(token_url, data=form).json()["access_token"]}
            url = values["FO_BASE_URL"] + "/api/services/SysMessageServices/SysMessageService/SendMessage"

            def send(n: int) -> int:
                content = json.dumps({"ProductionOrderNumber": f"P{n % 300 + 1:06d}"})
                body = {
                    "_companyId": "USMF",
                    "_messageQueue": "JmgMES3P",
                    "_messageType": "ProdProductionOrderStart",
                    "_messageContent": content,
                }
                return session.post(url, json=body, headers=headers).status_code

            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(connections) as pool:
                statuses = list(pool.map(send, range(calls)))
            elapsed = time.perf_counter() - started
            if statuses.count(200) != calls:
                raise SystemExit(f"only {statuses.count(200)} of {calls} calls succeeded")
            return calls / elapsed
        finally:
            process.terminate()
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for latency in (0.0, 50.0):
        rate = measure(latency, args.calls, args.connections)
        ideal = f"{args.connections / (latency / 1000):.0f}" if latency else "-"
        print(f"latency {latency:>4.0f} ms: {rate:6.0f} SendMessage/s over {args.connections} connections (ideal {ideal})")


if __name__ == "__main__":
    main()
