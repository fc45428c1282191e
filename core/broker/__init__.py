"""Broker connectivity: the gateway process between IB (through ib_insync) and the engine's rings.

Run it::

    quayside gateway run --config gateway.toml     # until SIGTERM / Ctrl-C
    quayside gateway check-config gateway.toml

or from Python: :class:`~.gateway.Gateway` on an asyncio loop, or
:class:`~.testing.BackgroundBrokerGateway` in a thread (tests, benchmarks).

Modules, in import order: :mod:`.config` (the schema), :mod:`.ib` (the only module that imports
the client library: ib_insync, or ib_async by configuration), :mod:`.ledger` (order map and fill
ledger, journaled), :mod:`.inbound` (records to the engine, back-pressure), :mod:`.ratelimit`
(the central limiter, the reconnection back-off), :mod:`.marketdata`, :mod:`.orders`,
:mod:`.reconcile`, :mod:`.positions` (the broker's positions onto the feed), :mod:`.gateway`
(connection, errors, the loops), :mod:`.commands` (the CLI).
The simulated IB Gateway the tests run it against is :mod:`.sim`.
"""
