"""``quayside support <service>``: run one support service as a plain process."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# name -> "module:Class"; each class is a quayside.support.common.service.Service
SERVICES: dict[str, tuple[str, str]] = {
    "pnl": ("quayside.support.pnl.service:PnlService", "average-cost P&L per instrument, strategy and total"),
    "risk": ("quayside.support.risk.service:RiskService", "risk monitor: exposure, limits, drawdown, watchdogs"),
    "recorder": (
        "quayside.support.recorder.service:RecorderService",
        "every feed record to daily files; JSON log events",
    ),
    "metrics": (
        "quayside.support.metrics.service:MetricsService",
        "Prometheus exporter of engine statistics and latencies",
    ),
    "dashboard": (
        "quayside.support.dashboard.service:DashboardService",
        "risk dashboard: live web page, JSON API, authenticated controls",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    support = sub.add_parser("support", help="support services that read the engine's feed", description=__doc__)
    ssub = support.add_subparsers(dest="service", required=True, metavar="SERVICE")
    for name, (target, what) in SERVICES.items():
        p = ssub.add_parser(name, help=what, description=f"{what}. Settings: --config FILE, QUAYSIDE_* environment.")
        p.add_argument("--config", type=Path, help="settings file (TOML); environment variables override it")
        p.set_defaults(func=_run, target=target)


def _run(args: argparse.Namespace) -> int:
    from quayside.support.common.settings import SettingsError, load_settings

    module, _, cls_name = args.target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    try:
        settings = load_settings(cls.settings_cls, args.config)
    except SettingsError as exc:
        print(f"quayside support {args.service}: {exc}", file=sys.stderr)
        return 2
    return cls(settings).serve()
