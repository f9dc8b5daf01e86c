"""Code shared by every flow, grouped by the story it tells: fo/ (F&O), store/ (Table Storage),
inbound/ (MES -> F&O), outbound/ (F&O -> MES), ops/ (operators), and at the top the settings, the
composition root (runtime), the error taxonomy, park reasons, the clock and the topology.

Nothing here imports `functions/` or `devtools/`. The packages' `__init__` files stay empty so that
importing one module loads no other (the cold start imports nothing heavy).
"""
