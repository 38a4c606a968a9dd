"""Reactive query subscriptions: clients subscribe to a query over `GET /ws` and are pushed
its new result whenever a commit may have changed it (docs/subscriptions.md).

`tables.py` records which tables each call reads and writes (and reads raw SQL for table
names), `protocol.py` holds the WebSocket messages, `listener.py` the process's LISTEN
connection on `swarm_changes`, and `hub.py` the subscriptions, their invalidation and
re-runs. The endpoint itself is `runtime/http/ws.py`; the notice a mutation sends with its
COMMIT is in `runtime/transactions.py`.
"""
