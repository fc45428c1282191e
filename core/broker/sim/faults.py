"""Fault injection: what can go wrong between a client and IB, on demand.

The state lives in :class:`Faults`; the gateway consults it on every connection, request and
outgoing message. Faults are switched on by admin commands (the line protocol of the admin
port, or :meth:`SimGateway.command <quayside.core.broker.sim.server.SimGateway.command>` from
Python); :data:`COMMANDS` documents them and :func:`parse_command` checks their arguments.

============================  ==========================================================
command                        effect
============================  ==========================================================
``drop [SECONDS]``             close every client connection; with SECONDS, also close the
                               API port for that long (connection refused), like the
                               gateway's daily restart
``error CODE [REQID] [TEXT]``  send error CODE to every client (default text per code);
                               1100 also halts market data, 1101 and 1102 resume it (1101:
                               "data lost", every market data subscription is dropped)
``delay MS``                   hold every outgoing message MS milliseconds (0: off)
``duplicate-exec``             send the last execution again, same execId, to its client
``refuse-client-id ID``        answer a connection with client id ID with error 326, close
``allow-client-id ID``         undo ``refuse-client-id``
``reject-next-order [CODE]``   reject the next order (201 "Order rejected", or CODE)
``pacing [CODE]``              answer the next request with a pacing violation (100, or
                               420) instead of serving it
``halt-data`` / ``resume-data``  stop / restart market data (the market goes on: orders
                               still fill; resume sends the current book)
``commission-delay MS``        commission reports follow their fills after MS milliseconds
``pause`` / ``resume``         stop / restart the market clock
``step SECONDS``               move a paused clock on at once
``speed X``                    X times real time (``inf``: as fast as possible)
``status`` / ``executions``    JSON: the gateway's state / every execution
``help``                       this list
============================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Faults", "COMMANDS", "ERROR_TEXTS", "CommandError", "parse_command"]

#: Texts IB sends with the codes a client most often has to handle.
ERROR_TEXTS: dict[int, str] = {
    100: "Max rate of messages per second has been exceeded:max=50 rec=51 (1)",
    162: "Historical Market Data Service error message:API historical data query cancelled",
    200: "No security definition has been found for the request",
    201: "Order rejected - reason:simulated rejection",
    202: "Order Canceled - reason:",
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    420: "Invalid Real-time Query:Pacing violation",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2107: "HMDS data farm connection is inactive but should be available upon demand.ushmds",
    2108: "Market data farm connection is inactive but should be available upon demand.usfarm",
    2110: "Connectivity between Trader Workstation and server is broken. It will be restored automatically.",
    2157: "Sec-def data farm connection is broken:secdefnj",
    2158: "Sec-def data farm connection is OK:secdefnj",
}

#: name -> (argument usage, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "drop": ("[SECONDS]", "close every client connection; refuse new ones for SECONDS"),
    "error": ("CODE [REQID] [TEXT]", "send an error to every client (1100 halts data, 1101/1102 resume)"),
    "delay": ("MS", "delay every outgoing message by MS milliseconds (0: off)"),
    "duplicate-exec": ("", "send the last execution again with the same execId"),
    "refuse-client-id": ("ID", "answer connections with this client id with error 326"),
    "allow-client-id": ("ID", "accept this client id again"),
    "reject-next-order": ("[CODE] [TEXT]", "reject the next order (default 201)"),
    "pacing": ("[CODE]", "answer the next request with a pacing violation (100 or 420)"),
    "halt-data": ("", "stop market data (orders still fill)"),
    "resume-data": ("", "restart market data, sending the current book"),
    "commission-delay": ("MS", "send commission reports MS milliseconds after their fills"),
    "pause": ("", "stop the market clock"),
    "resume": ("", "restart the market clock"),
    "step": ("SECONDS", "move the market clock on by SECONDS at once"),
    "speed": ("X", "run the market at X times real time (inf: as fast as possible)"),
    "status": ("", "the gateway's state as JSON"),
    "executions": ("", "every execution as JSON"),
    "help": ("", "list the commands"),
}


class CommandError(ValueError):
    """An admin command is unknown or has bad arguments; the message says which."""


@dataclass
class Faults:
    """Faults in force. ``refuse_until`` is a ``loop.time()`` deadline for the API port."""

    delay_s: float = 0.0
    refused_client_ids: set[int] = field(default_factory=set)
    reject_next: tuple[int, str] | None = None
    pacing_next: int | None = None
    data_halted: bool = False
    refuse_until: float = 0.0
    injected: dict[str, int] = field(default_factory=dict)

    def count(self, name: str) -> None:
        self.injected[name] = self.injected.get(name, 0) + 1

    def take_reject(self) -> tuple[int, str] | None:
        r, self.reject_next = self.reject_next, None
        return r

    def take_pacing(self) -> int | None:
        p, self.pacing_next = self.pacing_next, None
        return p

    def as_dict(self) -> dict:
        return {
            "delay_ms": self.delay_s * 1e3,
            "refused_client_ids": sorted(self.refused_client_ids),
            "reject_next_order": self.reject_next[0] if self.reject_next else None,
            "pacing_next": self.pacing_next,
            "data_halted": self.data_halted,
            "injected": dict(self.injected),
        }


def _number(text: str, what: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise CommandError(f"{what} must be a number, got {text!r}") from None
    if kind is float and value != value:
        raise CommandError(f"{what} must be a number, got {text!r}")
    return value


def parse_command(line: str) -> tuple[str, list]:
    """``"error 1100 -1"`` -> ``("error", [1100, -1, ""])``: name and checked arguments."""
    words = line.strip().split()
    if not words:
        raise CommandError("empty command; try 'help'")
    name, args = words[0].lower(), words[1:]
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name!r}; the commands are: {', '.join(COMMANDS)}")
    if name == "drop":
        seconds = _number(args[0], "SECONDS") if args else 0.0
        if seconds < 0:
            raise CommandError("SECONDS must be >= 0")
        return name, [seconds]
    if name == "error":
        if not args:
            raise CommandError("usage: error CODE [REQID] [TEXT]")
        code = _number(args[0], "CODE", int)
        req_id = _number(args[1], "REQID", int) if len(args) > 1 else -1
        text = " ".join(args[2:]) or ERROR_TEXTS.get(code, f"Simulated error {code}")
        return name, [code, req_id, text]
    if name in ("delay", "commission-delay"):
        if len(args) != 1:
            raise CommandError(f"usage: {name} MS")
        ms = _number(args[0], "MS")
        if ms < 0:
            raise CommandError("MS must be >= 0")
        return name, [ms]
    if name in ("refuse-client-id", "allow-client-id"):
        if len(args) != 1:
            raise CommandError(f"usage: {name} ID")
        return name, [_number(args[0], "ID", int)]
    if name == "reject-next-order":
        code = _number(args[0], "CODE", int) if args else 201
        text = " ".join(args[1:]) or ERROR_TEXTS.get(code, "Order rejected - reason:simulated rejection")
        return name, [code, text]
    if name == "pacing":
        return name, [_number(args[0], "CODE", int) if args else 100]
    if name == "step":
        if len(args) != 1:
            raise CommandError("usage: step SECONDS")
        seconds = _number(args[0], "SECONDS")
        if seconds < 0:
            raise CommandError("SECONDS must be >= 0")
        return name, [seconds]
    if name == "speed":
        if len(args) != 1:
            raise CommandError("usage: speed X")
        x = _number(args[0].replace("max", "inf"), "X")
        if not x > 0:
            raise CommandError("X must be > 0 (inf: as fast as possible)")
        return name, [x]
    if args:
        raise CommandError(f"{name} takes no arguments")
    return name, []


def help_text() -> str:
    return "; ".join(f"{name} {usage}".strip() + f": {what}" for name, (usage, what) in COMMANDS.items())
