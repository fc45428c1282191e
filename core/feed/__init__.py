"""Shared-memory rings and the UDP relay."""
