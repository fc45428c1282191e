"""P&L service: average-cost realized and unrealized P&L per instrument, strategy and total."""
