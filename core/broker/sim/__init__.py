"""A simulated IB Gateway: speaks the TWS API socket protocol so ib_insync runs with no account.

Run it::

    quayside simgateway                          # 127.0.0.1:4002, admin port 4003, synthetic market
    quayside simgateway --data feed.qsf --registry instruments.toml --speed 10
    quayside simgateway --port 0 --speed max --paused     # any free port; clock moved by hand
    quayside simgateway --send "drop 30"         # a fault, through the admin port of a running one
    python -m quayside.core.broker.sim [same options]

or from Python: :class:`~.server.SimGateway` on an asyncio loop, or
:class:`~.background.BackgroundGateway` in a thread next to a synchronous ``ib_insync.IB``
(:mod:`.testing` has the helpers the tests use). Configuration: :mod:`.config`.

**Protocol.** Server version 176 (:mod:`.protocol`), every message laid out as ib_insync 0.9.86
decodes it at that version (:mod:`.messages` out, :mod:`.requests` in). A connection is greeted
with managedAccounts, nextValidId and the 2104/2106/2158 "farm OK" notices, as IB Gateway does.

=========================================  ==================================================
request (id)                                answer (ids)
=========================================  ==================================================
startApi (71)                               managedAccounts (15), nextValidId (9), error (4)
reqMktData (1), snapshot or stream          marketDataType (58), tickReqParams (81),
                                            tickPrice (1), tickSize (2), tickSnapshotEnd (57)
cancelMktData (2)                           -
reqTickByTickData (97): Last, AllLast,      tickByTick (99)
BidAsk, MidPoint; cancelTickByTickData (98)
reqContractDetails (9)                      contractDetails (10), contractDetailsEnd (52);
                                            error 200 if unknown
placeOrder (3), incl. what-if and           openOrder (5), orderStatus (3), execDetails (11),
modifications; cancelOrder (4);             commissionReport (59); errors 103, 110, 161,
reqGlobalCancel (58)                        201, 202, 10147
reqOpenOrders (5), reqAllOpenOrders (16)    openOrder (5) + orderStatus (3), openOrderEnd (53)
reqCompletedOrders (99)                     completedOrder (101), completedOrdersEnd (102)
reqExecutions (7) with a filter             execDetails (11), commissionReport (59),
                                            execDetailsEnd (55)
reqPositions (61), cancelPositions (64)     position (61), positionEnd (62), then updates
reqAccountUpdates (6)                       updateAccountValue (6), updatePortfolio (7),
                                            updateAccountTime (8), accountDownloadEnd (54)
reqAccountUpdatesMulti (76), cancel (77)    accountUpdateMulti (73), accountUpdateMultiEnd (74)
reqAccountSummary (62), cancel (63)         accountSummary (63), accountSummaryEnd (64)
reqIds (8), reqCurrentTime (49),            nextValidId (9), currentTime (49),
reqManagedAccts (17)                        managedAccounts (15)
reqAutoOpenOrders (15),                     accepted, no answer
reqMarketDataType (59)
anything else with a request id             error 321 "not supported" (so no request hangs)
=========================================  ==================================================

**Market and clock.** Quotes and trades come from a data file or recording (any format
:func:`quayside.core.replay.loaders.load` reads) or the built-in seeded synthetic market
(:mod:`.market`). The gateway's clock is the data's: tick-by-tick times, execution times and
``reqCurrentTime`` are data time (the synthetic market starts at "now"). Orders fill against
the replayed top of book with the backtest venue's rules (:mod:`.broker`); the account's cash,
positions and values follow IB's conventions (:mod:`.account`).

**Clients.** One connection per client id (another gets error 326 and is closed). Order events
and live executions go to the client that placed the order (and to ``master_client_id``);
``reqExecutions`` returns the requesting client's executions (the master's: everyone's);
``reqAllOpenOrders`` and ``reqCompletedOrders`` cover every client. Orders outlive their
client's connection, as at IB.

**Faults** on demand, through the admin port (one command per line, one reply line starting
``ok`` or ``error:``) or :meth:`SimGateway.command <.server.SimGateway.command>`: see
:mod:`.faults`.
"""
