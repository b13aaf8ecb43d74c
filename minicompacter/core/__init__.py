"""The core: the math of the encoder and of every method, with no files, data or command line.

    nn.py        the layers written plainly (the reference)
    kernels.py   the same layers as autograd primitives with hand-written gradients
    threads.py   the work split over the cores that the kernels use inside parallel()
    layers.py    the one switch between the two, and the table of activations
    phm.py       Kronecker products and the PHM layer
    encoder.py   a BERT-style encoder with two adapter slots and an attention-projection hook
    t5.py        T5: encoder, decoder, generation, the same slots in both stacks
    methods.py   the nine methods: configs, presets, what each trains and where it runs
                 (in the encoder, and in both of T5's stacks)
    model.py     a task model: trainable and frozen trees, predictions, the loss (T5's
                 text to text too)
    optim.py     AdamW, the learning-rate schedule, gradient clipping
    tree.py      parameter trees: paths, flatten, split and merge
    paths.py     the names in a model's tree and the predicates on them
    counting.py  parameter counts, analytic from shapes and measured on trees

Nothing here imports from minicompacter.harness (tests/test_layout.py checks it).
"""
