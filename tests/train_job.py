"""A training job for the signal tests of test_fault_injection.py, run as a subprocess.

``python train_job.py OUT [SIGNAL FORWARD]``: trains the tiny adapter of test_lora_training into
OUT; with SIGNAL (``SIGINT`` / ``SIGTERM``) the process sends it to itself in the middle of the
FORWARD-th forward pass (mid-step: after dropout drew random numbers, before the optimizer step).
Exit code 0 when the adapter is finished, 128 + signal number when interrupted.
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from conftest import build_tiny_llama
from test_lora_training import _config, _rows

from recsim_personas.agents.llm import load_tokenizer
from recsim_personas.training.lora import train_adapter


def main(out: str, signame: str | None, at_forward: int) -> int:
    torch.set_num_threads(1)
    # As in a terminal: a job started in the background (CI, nohup) inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tok = load_tokenizer(None)
    model = build_tiny_llama(tok)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)
    if signame:
        calls = {"n": 0}

        def hook(module, args):
            calls["n"] += 1
            if calls["n"] == at_forward:
                os.kill(os.getpid(), getattr(signal, signame))

        model.model.layers[0].register_forward_pre_hook(hook)
    # dropout: the RNG state must be the one at a step boundary; no periodic checkpoints.
    cfg = _config(max_steps=8, checkpoint_every=0, dropout=0.1)
    try:
        train_adapter(model, tok, _rows(tok), cfg, out, name="a", progress=False)
    except KeyboardInterrupt as exc:
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None,
                  int(sys.argv[3]) if len(sys.argv) > 3 else 0))
