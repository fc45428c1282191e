"""loguru, configured once per service: JSON lines when not on a terminal, colours when on one."""

from __future__ import annotations

import sys

from loguru import logger

__all__ = ["configure_logging", "logger"]


def configure_logging(service: str, fmt: str = "auto", level: str = "INFO") -> None:
    """Send logs to stderr: ``json`` (one JSON object per line, for Loki or Elastic),
    ``console`` (coloured), or ``auto`` (console on a terminal, JSON otherwise)."""
    logger.remove()
    serialize = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    logger.configure(extra={"service": service})
    if serialize:
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=level,
            colorize=True,
            format="<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {extra[service]}: {message}",
            backtrace=False,
            diagnose=False,
        )
