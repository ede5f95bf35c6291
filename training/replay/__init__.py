"""The replay wing: the store of every generation and embedding (``store``, ``file``, ``checks``,
``readers``), the outcome tree walked in one place (``tree``), filling it (``record``,
``endpoint_hops``, ``record_meta``, ``backfill_confidence``) and the records shipped in
``training/data/`` (``shipped``, ``export_shipped``). Imports ``tasks`` only."""
