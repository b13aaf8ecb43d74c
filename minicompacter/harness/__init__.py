"""The harness: everything around the core that touches the outside world (files, data,
training runs, the study, the command line). It uses the core; the core never uses it.

    pretrained.py  pretrained models by name (minilm, tiny, tiny-t5, a directory, a hub id)
    data/          tasks (GLUE, the synthetic suite, the user's data), batches, text to
                   text for T5, metrics
    formats/       files in and out: the native checkpoint, AdapterHub, peft, transformers,
                   and dispatch.py, the one door (load_adapter, export_adapter)
    training/      a run: the training loop, evaluation, checks, the output directory's
                   rule, interrupts, jobs in their own process
    study/         the study behind RESULTS.md, its report and figures
    cli.py         python -m minicompacter ...

docs/design.md has the module map: every module and what it holds.
"""
