"""Tasks and their data: GLUE and the synthetic suite (tasks.py, synthetic.py), texts to
batches (batches.py), tasks as text to text for T5 (text2text.py), the metrics (metrics.py),
the user's data (userdata.py, files.py, labels.py)."""
