"""Run docs/interop.md's default run as a new user would: every command of its first block,
as written and in order, in a new directory (the finetune commands with a smaller
--train-size and one epoch, to be quick), then the PyTorch code of "The default run, loaded
in PyTorch" as written, and compare its logits with minicompacter's own for the same texts.
Also loads the adapter on the original MiniLM instead of base/, to measure what the trained
layer norms change.

Runs where PyTorch, transformers and adapters are installed (never in CI, which has no
torch); the minicompacter commands run with --python (default: this interpreter), which
needs minicompacter and the MiniLM package:

    GLUE_DIR=... torch-env/bin/python bench/check_interop_docs.py [--python venv/bin/python]

Exits 1 unless the logits agree to 1e-5.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "interop.md"


def blocks(text, language):
    """The fenced code blocks of a language, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def default_run_commands(text):
    """The commands of the first bash block, in order."""
    return [l for l in blocks(text, "bash")[0].splitlines() if l.strip()]


def default_run_code(text):
    """The python block marked <!-- default-run: python -->."""
    return re.search(r"<!-- default-run: python -->\n```py\n(.*?)```", text, flags=re.S).group(1)


def shorter(command, train_size, epochs):
    """A finetune command with a smaller --train-size and fewer epochs (nothing else changed)."""
    if " finetune " not in command:
        return command
    command = re.sub(r"--train-size \d+", f"--train-size {train_size}", command)
    return command + f" --epochs {epochs}"


def minicompacter_logits(python, texts, env):
    """minicompacter's logits for the texts on runs/sst2, as `predict` computes them."""
    code = ("import json, sys, numpy as np, minicompacter as mc; "
            "from minicompacter.core.model import predict; "
            "model, t, f, config = mc.load_adapter('runs/sst2'); "
            "p = mc.load_pretrained('minilm'); "
            "b = mc.tokenize(p.tokenizer, json.loads(sys.argv[1]), max_length=config['max_length']); "
            "print(json.dumps(np.asarray(predict(t, f, b, model)).tolist()))")
    done = subprocess.run([python, "-c", code, json.dumps(texts)], capture_output=True, text=True,
                          env=env, check=True)
    return np.array(json.loads(done.stdout))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", default=sys.executable, help="the interpreter with minicompacter")
    p.add_argument("--train-size", type=int, default=200)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workdir", default=None, help="where runs/ goes (default: a new temporary one)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    text = DOC.read_text()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="interop-docs-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for command in default_run_commands(text):
        command = shorter(command, args.train_size, args.epochs)
        print(f"$ {command}", flush=True)
        argv = shlex.split(os.path.expandvars(command))
        done = subprocess.run([args.python] + argv[1:], cwd=work, env=env, capture_output=True,
                              text=True)
        print(done.stdout[-2000:], done.stderr[-2000:], sep="")
        if done.returncode:
            sys.exit(f"the command failed (exit code {done.returncode})")
    namespace = {}
    os.chdir(work)
    exec(compile(default_run_code(text), "docs/interop.md (default run)", "exec"), namespace)
    theirs = namespace["logits"].numpy()
    ours = minicompacter_logits(args.python, namespace["texts"], env)
    diff = float(np.abs(theirs - ours).max())
    print(f"\nmax |logits of the documented PyTorch code - minicompacter's| = {diff:.1e} "
          f"({len(ours)} texts, {ours.shape[1]} labels)")
    hub = hub_model_logits(namespace, args.python, env)
    print(f"the same adapter on the original MiniLM instead of base/: logits differ by up to "
          f"{float(np.abs(hub - ours).max()):.2f}")
    sys.exit(0 if diff <= 1e-5 else 1)


def hub_model_logits(namespace, python, env):
    """The documented code's logits with the adapter loaded on the original MiniLM (the
    directory the MiniLM package ships), not on base/: what forgetting base/ costs."""
    import adapters
    import torch

    model_dir = subprocess.run([python, "-c", "from minicompacter.harness.pretrained import "
                                "minilm_dir; print(minilm_dir())"], capture_output=True, text=True,
                               env=env, check=True).stdout.strip()
    model = adapters.BertAdapterModel.from_pretrained(model_dir)
    name = model.load_adapter(namespace["export"], use_safetensors=True)
    model.set_active_adapters(name)
    model.eval()
    with torch.no_grad():
        hidden = model(**namespace["inputs"]).last_hidden_state
    mask = namespace["mask"]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return (pooled @ namespace["head"]["weight"].T + namespace["head"]["bias"]).numpy()


if __name__ == "__main__":
    main()
