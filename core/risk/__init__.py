"""Pre-trade risk: the checks every order passes inside the engine."""
