"""The harness: everything around the core that touches the outside world (files, data,
training runs, the study, the command line). It uses the core; the core never uses it.

    pretrained.py  pretrained encoders by name (minilm, tiny, a directory, a hub id)
    data/          tasks (GLUE, the synthetic suite), batches, metrics
    formats/       files in and out: the native checkpoint, AdapterHub, peft, transformers,
                   and dispatch.py, the one door (load_adapter, export_adapter)
    training/      a run: the training loop, evaluation, checks, the output directory's
                   rule, interrupts, jobs in their own process
    study/         the study behind RESULTS.md, its report and figures
    cli.py         python -m minicompacter ...

docs/design.md has the module map: every module and what it holds.
"""
