"""Tasks and their data: GLUE and the synthetic suite (tasks.py, synthetic.py), texts to
batches (batches.py), the metrics (metrics.py)."""
