"""Market data sources that the project generates itself (the built-in synthetic market)."""
