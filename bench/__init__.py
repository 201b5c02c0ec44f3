"""The comparison harness: athena-cdc against baseline WebSocket servers, on this machine.

Run from a checkout's root: ``python -m bench --help`` (``python -m bench redis --help``:
the Redis store's benchmark). It starts every server itself (athena-cdc, uWebSockets.js,
nats-server, Node.js ``ws``, a naive Python server; ``baselines/``), drives them with the
installed load generator (:mod:`athena_cdc.bench`), compares their CPU, judges the
targets and saves results and charts in ``results/``. None of it is in the wheel: against
your own deployment, run ``athena-cdc bench tenants --url ws://host:4053/ws``.
See ``docs/performance.md`` for the method.
"""
