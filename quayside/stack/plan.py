"""What a demo run starts, and with which configuration: decided and written before anything runs.

:func:`build_plan` turns the command line into a :class:`Plan`: the market (the built-in
synthetic one, or a data file and the instruments it names), the strategy and its risk limits,
the ring names (private to this run unless asked for, so that two demos, or a demo and a test,
never share a ring), a free port for every listener (the usual one when it is free), the core
the engine is pinned to and the wait strategy that suits it, and one TOML file per part in the
run folder. Each :class:`Part` is an existing ``quayside`` command plus how to tell it is ready.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from quayside.core.feed.segment import resolve
from quayside.core.instruments import InstrumentRegistry

__all__ = ["DemoOptions", "Part", "Plan", "PlanError", "build_plan", "choose_cpu", "free_port", "STANDARD_PORTS"]

#: The port each listener asks for first; a busy one is replaced by a free one.
STANDARD_PORTS = {
    "simgateway": 4002,
    "simgateway-admin": 4003,
    "pnl": 9101,
    "risk": 9102,
    "recorder": 9103,
    "metrics": 9104,
    "dashboard": 9105,
}
SERVICES = ("pnl", "risk", "recorder", "metrics")
#: What a person opens on each service (the supervisor polls ``/health``).
SERVICE_PAGES = {"pnl": "/pnl", "risk": "/risk", "recorder": "/files", "metrics": "/metrics"}
RING_ROLES = ("inbound", "outbound", "control", "feed")
#: The demo's crossover trades often enough to watch (the backtest default is slower and calmer).
DEMO_CROSSOVER = {"fast_span": 5, "slow_span": 20, "threshold_bps": 0.0}
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class PlanError(ValueError):
    """An option or data file cannot make a run; the message says which and why."""


@dataclass(frozen=True)
class DemoOptions:
    """The command line of ``quayside demo`` (every default is on its flags)."""

    run_dir: Path
    data: Path | None = None
    duration: float | None = None
    strategy: str = "crossover"
    params: dict = field(default_factory=dict)
    speed: float = 1.0
    seed: int = 7
    core_only: bool = False
    dashboard: bool = True
    dashboard_token: str | None = None
    ring_prefix: str | None = None
    cpu: int | None = None
    wait_strategy: str | None = None
    relay_dest: str = "127.0.0.1:7000"
    startup_timeout: float = 600.0


@dataclass
class Part:
    """One process of the stack: ``quayside ARGS``, and what says it is ready.

    ``ready`` is one of ``listening`` (the simulated gateway printed its port), ``engine`` (its
    feed ring exists, made by this process, with the engine's start record), ``gateway`` (the
    gateway's BROKER_CONNECTED on the feed), ``relay`` (its JSON ``ready`` line) or ``http``
    (``GET health`` answers 200). A part starts once every part named in ``after`` is ready."""

    name: str
    args: list[str]
    ready: str
    after: tuple[str, ...] = ()
    timeout: float = 60.0
    url: str | None = None  # what a person opens
    health: str | None = None  # what the supervisor polls
    env: dict[str, str] = field(default_factory=dict)  # on top of the cleaned environment


@dataclass
class Plan:
    run_dir: Path
    parts: list[Part]
    rings: dict[str, str]  # role -> name or path, as the parts were configured
    ring_paths: dict[str, Path]
    registry: InstrumentRegistry
    symbols: list[str]
    market: str
    cpu: int
    wait_strategy: str
    wait_reason: str
    ports: dict[str, int]
    token: str | None = None
    token_generated: bool = False
    notes: list[str] = field(default_factory=list)

    def part(self, name: str) -> Part | None:
        return next((p for p in self.parts if p.name == name), None)


def free_port(preferred: int, taken: set[int]) -> int:
    """``preferred`` if nothing listens on it on 127.0.0.1 (and this plan has not used it), else
    a free port the kernel picks."""
    for port in (preferred, 0):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen = s.getsockname()[1]
            if chosen not in taken:
                taken.add(chosen)
                return chosen
    raise PlanError("no free TCP port on 127.0.0.1")


def _isolated_cpus() -> set[int]:
    from quayside.core.engine.process import _isolated_cpus

    return _isolated_cpus()


def choose_cpu(requested: int | None, wait: str | None) -> tuple[int, str, str]:
    """(cpu, wait strategy, why). An isolated core gets the engine's ``auto`` (busy-spin there);
    a shared one gets ``sleep``: spinning, even with yields, would take a whole core from the
    gateway, the services and everyone else on a small machine, for a few microseconds the demo
    does not need. Without ``requested``, an isolated core if there is one, else the last."""
    allowed = sorted(os.sched_getaffinity(0))
    isolated = _isolated_cpus()
    if requested is not None:
        if requested not in allowed:
            raise PlanError(f"--cpu {requested}: this process may run on cpus {allowed} only")
        cpu = requested
    else:
        cpu = next((c for c in allowed if c in isolated), allowed[-1])
    if wait is not None:
        return cpu, wait, "chosen on the command line"
    if cpu in isolated:
        return cpu, "auto", f"cpu {cpu} is isolated: busy-spin"
    return cpu, "sleep", f"cpu {cpu} is shared with other processes: spin, yield, then sleep when idle"


def _market(options: DemoOptions) -> tuple[InstrumentRegistry, list[str], str]:
    from quayside.core.replay.defaults import SYNTHETIC_SIZES

    if options.data is None:
        from quayside.core.instruments import default_registry

        return default_registry(), list(SYNTHETIC_SIZES), f"built-in synthetic market (seed {options.seed})"
    from quayside.core.replay.defaults import load_events
    from quayside.core.replay.loaders import DataFormatError

    if not options.data.exists():
        raise PlanError(f"--data {options.data}: no such file or folder")
    try:
        _events, registry, symbols, description = load_events(options.data, options.seed, 1.0)
    except (DataFormatError, ValueError, OSError) as exc:
        raise PlanError(f"--data {options.data}: {exc}") from None
    return registry, list(symbols), description


def _strategy_and_risk(options: DemoOptions, registry: InstrumentRegistry, symbols: list[str]) -> tuple[dict, dict]:
    from quayside.core.replay.defaults import SYNTHETIC_SIZES, default_replay_config
    from quayside.core.risk.config import RiskConfig

    synthetic = options.data is None
    sizes = {s: SYNTHETIC_SIZES[s] for s in symbols if s in SYNTHETIC_SIZES} if synthetic else {}
    params: dict = {}
    if options.strategy == "crossover":
        params = {**DEMO_CROSSOVER, **({"order_qty": {s: q for s, (q, _) in sizes.items()}} if sizes else {})}
    elif options.strategy == "market_maker" and sizes:
        params = {
            "quote_qty": {s: q for s, (q, _) in sizes.items()},
            "max_inventory": {s: lim for s, (_, lim) in sizes.items()},
        }
    params.update(options.params)
    risk = default_replay_config(None, symbols, registry, True).risk if synthetic else RiskConfig()
    strategy = {"name": options.strategy, "instruments": symbols, "params": params}
    return strategy, risk.model_dump(mode="json", exclude_none=True)


def _rings(options: DemoOptions) -> dict[str, str]:
    prefix = options.ring_prefix
    if prefix is None:
        prefix = "quayside" if options.core_only else f"quayside-demo-{secrets.token_hex(4)}"
    if not _PREFIX.match(prefix):
        raise PlanError(f"--ring-prefix {prefix!r}: use letters, digits, '.', '_' and '-' only (up to 64)")
    return {role: f"{prefix}-{role}" for role in RING_ROLES}


def _write(path: Path, data: dict) -> Path:
    from quayside.core.broker.testing import toml_text

    path.write_text(toml_text(data))
    return path


def _fresh_run_folder(run: Path) -> None:
    """The run folder holds one run: what a previous run left is removed (only what a run writes:
    the simulated gateway is new every run, so an old order journal or recording would lie)."""
    import shutil

    for name in ("logs", "recordings"):
        shutil.rmtree(run / name, ignore_errors=True)
    for name in ("gateway-state.jsonl", "audit.jsonl", "stack.json"):
        (run / name).unlink(missing_ok=True)
    (run / "logs").mkdir(parents=True)


def build_plan(options: DemoOptions) -> Plan:
    """Decide everything and write the configurations into ``options.run_dir``."""
    run = options.run_dir.resolve()
    _fresh_run_folder(run)
    registry, symbols, market = _market(options)
    registry_path = run / "registry.toml"
    registry_path.write_text(registry.to_toml())
    strategy, risk = _strategy_and_risk(options, registry, symbols)
    rings = _rings(options)
    cpu, wait, why = choose_cpu(options.cpu, options.wait_strategy)
    taken: set[int] = set()
    ports = {"simgateway": free_port(STANDARD_PORTS["simgateway"], taken)}
    ports["simgateway-admin"] = free_port(STANDARD_PORTS["simgateway-admin"], taken)
    with_services = not options.core_only
    with_dashboard = with_services and options.dashboard and dashboard_available()
    for name in (*SERVICES, "dashboard") if with_services else ():
        if name != "dashboard" or with_dashboard:
            ports[name] = free_port(STANDARD_PORTS[name], taken)

    data = {"speed": options.speed, "seed": options.seed}
    if options.data is not None:
        data |= {"path": str(options.data.resolve()), "at_end": "loop"}
    sim = _write(
        run / "simgateway.toml",
        {
            "port": ports["simgateway"],
            "admin_port": ports["simgateway-admin"],
            "registry": str(registry_path),
            "data": data,
        },
    )
    engine = _write(
        run / "engine.toml",
        {
            "cpu": cpu,
            "wait_strategy": wait,
            "heartbeat_ms": 500.0,
            "registry": str(registry_path),
            "rings": dict(rings),
            "strategy": strategy,
            "risk": risk,
        },
    )
    gateway = _write(
        run / "gateway.toml",
        {
            "port": ports["simgateway"],
            "registry": str(registry_path),
            "instruments": symbols,
            "state_file": str(run / "gateway-state.jsonl"),
            "max_order_age_ms": 5_000.0,  # a busy small machine may hold an order a moment
            "rings": {k: v for k, v in rings.items() if k != "control"},
        },
    )
    parts = [
        Part("simgateway", ["simgateway", "--config", str(sim)], "listening"),
        Part("engine", ["engine", "run", "--config", str(engine)], "engine", timeout=options.startup_timeout),
        Part("gateway", ["gateway", "run", "--config", str(gateway)], "gateway", after=("simgateway", "engine")),
        Part(
            "relay",
            ["feed", "relay", "--ring", rings["feed"], "--dest", options.relay_dest, "--json"],
            "relay",
            after=("engine",),
        ),
    ]
    if with_services:
        common = {"registry": str(registry_path), "feed": {"ring": rings["feed"]}}
        extra = {
            "pnl": {},
            "risk": {"risk": {"engine_config": str(engine), "control": {"ring": rings["control"]}}},
            "recorder": {"recorder": {"folder": str(run / "recordings"), "events": "file"}},
            "metrics": {},
        }
        for name in SERVICES:
            conf = _write(run / f"{name}.toml", {**common, "http": {"port": ports[name]}, **extra[name]})
            url = f"http://127.0.0.1:{ports[name]}"
            args = ["support", name, "--config", str(conf)]
            page, health = url + SERVICE_PAGES[name], url + "/health"
            parts.append(Part(name, args, "http", after=("engine",), url=page, health=health))
    plan = Plan(
        run,
        parts,
        rings,
        {role: resolve(name) for role, name in rings.items()},
        registry,
        symbols,
        market,
        cpu,
        wait,
        why,
        ports,
    )
    if with_dashboard:
        _add_dashboard(plan, options, common, engine)
    elif with_services and options.dashboard:
        plan.notes.append("the dashboard is not installed in this build (quayside support dashboard): skipped")
    return plan


def dashboard_available() -> bool:
    """Whether this build has ``quayside support dashboard``."""
    from quayside.support.commands import SERVICES as AVAILABLE

    return "dashboard" in AVAILABLE


def _add_dashboard(plan: Plan, options: DemoOptions, common: dict, engine: Path) -> None:
    from quayside.support.dashboard.auth import MIN_TOKEN_LENGTH, TOKEN_ENV

    token = options.dashboard_token
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise PlanError(f"--dashboard-token: use at least {MIN_TOKEN_LENGTH} characters")
    plan.token_generated = token is None
    plan.token = token or secrets.token_urlsafe(18)
    port = plan.ports["dashboard"]
    conf = _write(
        plan.run_dir / "dashboard.toml",
        {
            **common,
            "http": {"port": port},
            "audit_log": str(plan.run_dir / "audit.jsonl"),
            "dashboard": {"control_ring": plan.rings["control"], "engine_config": str(engine)},
        },
    )
    url = f"http://127.0.0.1:{port}"
    args = ["support", "dashboard", "--config", str(conf)]
    # the token reaches the dashboard through its environment only, never a file
    env = {TOKEN_ENV: plan.token}
    plan.parts.append(
        Part("dashboard", args, "http", after=("engine",), url=url + "/", health=url + "/health", env=env)
    )
