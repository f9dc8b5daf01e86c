"""MES -> F&O: the flows, the MES message contract and mappings, the pipeline, the order gate and its wake-up."""
