"""The support image's healthcheck: ``GET /health`` of the service running in this container.

Docker runs it every few seconds in every support container, so it uses the standard library
only (importing the services would cost more than the check). It finds the service's port in
``QUAYSIDE_HTTP__PORT`` (what compose sets), else from the container's command line
(``quayside support <name>``, seen as PID 1's arguments, behind ``--init`` or not) and the
services' default ports, so a plain ``docker run IMAGE risk`` is checked with no configuration.
Exits 0 when ``/health`` answers 200, 1 otherwise (503 is a degraded service: unhealthy).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

# the services' own default ports (Service.default_port); tests/containers checks they agree
DEFAULT_PORTS = {"pnl": 9101, "risk": 9102, "recorder": 9103, "metrics": 9104, "dashboard": 9105}


def service_name(cmdline: list[str]) -> str | None:
    """The ``<name>`` in ``... support <name> ...``."""
    for i, arg in enumerate(cmdline[:-1]):
        if arg == "support":
            return cmdline[i + 1]
    return None


def health_url(env: dict[str, str], cmdline: list[str]) -> str:
    port = int(env.get("QUAYSIDE_HTTP__PORT") or 0)
    if not port:
        name = service_name(cmdline)
        if name not in DEFAULT_PORTS:
            raise SystemExit(f"healthcheck: no QUAYSIDE_HTTP__PORT and no known service in {cmdline!r}")
        port = DEFAULT_PORTS[name]
    host = env.get("QUAYSIDE_HTTP__HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def main() -> int:
    cmdline = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    url = health_url(dict(os.environ), cmdline)
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("QUAYSIDE_HEALTH_TIMEOUT", "4"))) as reply:
            reply.read()
    except urllib.error.HTTPError as exc:
        print(f"{url}: HTTP {exc.code}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
