"""Strategies: jitted code against the engine's strategy interface."""
