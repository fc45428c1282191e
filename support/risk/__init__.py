"""Risk monitor: exposure, limit utilisation, drawdown, watchdogs, and responses via the control ring."""
