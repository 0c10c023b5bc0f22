"""The SQL both dialects share, one module per table or concern.

``connection`` runs statements (engines, transactions, deadlines, errors);
``jobs``, ``history``, ``processes``, ``schedules`` and ``stats`` hold each
table's statements; ``backend.SQLBackend`` combines them for ``sqlite.py`` and
``postgres.py``. SQL is written only under ``burrow/backends``.
"""
