"""Support services: run in containers, read the engine feed."""
