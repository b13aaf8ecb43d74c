"""A run: the training loop (train.py), evaluation and prediction (evaluate.py), the checks
made before any work (checks.py), the output directory's rule (rundir.py), interrupts
(interrupts.py), jobs in a process of their own (jobs.py), the process's memory, allocator
and progress bars (process.py)."""
