"""The core: the math of the encoder and of every method, with no files, data or command line.

    nn.py        the layers written plainly (the reference)
    kernels.py   the same layers as autograd primitives with hand-written gradients
    threads.py   the work split over the cores that the kernels use inside parallel()
    layers.py    the one switch between the two, and the table of activations
    phm.py       Kronecker products, the PHM layer, its rules (learned or an algebra's)
    encoder.py   a BERT-style encoder with two adapter slots and hooks on its attention
                 projections, its input embeddings and its weights
    t5.py        T5: encoder, decoder, generation, the same slots in both stacks
    methods.py   the methods: configs, presets, what each trains and where it runs (in the
                 encoder, and in both of T5's stacks)
    blocks.py    where a method's per-block entries go, in every model's stacks
    updates.py   updates beside a weight (LoRA, LoKr, the PHM update) and merging them in
    prompts.py   prompt tuning: P vectors before the input
    intrinsic.py Intrinsic-SAID: the Walsh-Hadamard and Fastfood transforms
    model.py     a task model: trainable and frozen trees, predictions, the loss (T5's
                 text to text too)
    optim.py     AdamW, the learning-rate schedule, gradient clipping
    tree.py      parameter trees: paths, flatten, split and merge
    paths.py     the names in a model's tree and the predicates on them
    counting.py  parameter counts, analytic from shapes and measured on trees

Nothing here imports from minicompacter.harness (tests/test_layout.py checks it).
"""
