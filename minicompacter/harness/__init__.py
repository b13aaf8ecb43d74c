"""The harness: everything around the core that touches the outside world.

    pretrained.py  loading BERT checkpoints and tokenizers (a directory, the hub, MiniLM, tiny)
    data.py        GLUE tasks (local TSV or the hub), the paper's splits, tokenising, batches
    synthetic.py   the synthetic GLUE-like suite
    metrics.py     GLUE metrics with the glue metric's key names
    train.py       fine-tuning and evaluation loops, best-checkpoint selection, --resume
    checkpoint.py  adapter-only checkpoint files, written atomically; last/ as a whole
    rundir.py      an output directory belongs to one run (a lock), and the one rule for
                   an existing --out (reported, resumed, replaced or refused)
    checks.py      the checks made before any work: settings, lengths, options, room
    interrupts.py  SIGTERM handled as Ctrl-C, and interrupts held while a step is recorded
    jobs.py        running a job in a process of its own
    study.py       many runs over tasks, methods, sizes and seeds; the study behind RESULTS.md
    report.py      RESULTS.md, one function per section
    plots.py       the figures
    cli.py         python -m minicompacter ...

The harness uses the core; the core never uses the harness.
"""
