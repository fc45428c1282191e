"""``quayside demo``: the whole stack on one machine, as plain processes, under one supervisor.

The stack is made of the commands that already exist (``quayside simgateway``, ``gateway run``,
``engine run``, ``feed relay``, ``support ...``); this package only plans a run (configurations
in a run folder, private ring names, free ports), starts each part in dependency order once the
one before it is ready, watches the feed for a live summary, and stops everything in reverse.
"""
