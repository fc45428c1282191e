"""Broker connectivity: the gateway process between IB (through ib_insync) and the engine's rings."""
