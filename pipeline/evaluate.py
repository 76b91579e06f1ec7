"""Held-out evaluation: MLM accuracy and perplexity over real masked positions, NSP accuracy.

    python pipeline/evaluate.py --output-dir output --split test
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np

from pipeline.dataset import eval_batches
from pipeline.examples import Pairs


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """In numpy: Paddle 3.3's CPU log_softmax takes seconds on [256, 10, vocab] (measured 6 s)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def evaluate(model, pairs: Pairs, vocab_size: int, max_len: int, batch_size: int = 256,
             mask_prob: float = 0.15, seed: int = 0) -> dict[str, float]:
    """Run `model` (BertForPretraining) in eval mode over every pair once, with fixed masks."""
    import paddle

    was_training = model.training
    model.eval()
    correct = total = nll = nsp_correct = 0.0
    with paddle.no_grad():
        for b in eval_batches(pairs, vocab_size, max_len, batch_size, mask_prob, seed):
            mlm_logits, nsp_logits = model(*(paddle.to_tensor(b[k]) for k in
                                             ("token_ids", "segments", "valid_lens", "pred_positions")))
            log_probs = log_softmax(mlm_logits.astype("float32").numpy())
            weights = b["mlm_weights"]
            labels = b["mlm_labels"]
            picked = np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
            nll -= float((picked * weights).sum())
            correct += float(((log_probs.argmax(-1) == labels) * weights).sum())
            total += float(weights.sum())
            nsp_correct += float((nsp_logits.numpy().argmax(-1) == b["nsp_labels"]).sum())
    if was_training:
        model.train()
    return {"mlm_accuracy": correct / total, "mlm_perplexity": math.exp(nll / total),
            "nsp_accuracy": nsp_correct / len(pairs), "pairs": len(pairs)}


def format_metrics(metrics: dict[str, float]) -> str:
    return (f"held-out MLM accuracy {metrics['mlm_accuracy']:.3f}, perplexity {metrics['mlm_perplexity']:.1f}, "
            f"NSP accuracy {metrics['nsp_accuracy']:.3f} over {metrics['pairs']} pairs")


def main(argv: list[str] | None = None) -> int:
    from pipeline.runtime import quiet_paddle_import

    quiet_paddle_import()
    from pipeline import checkpoint
    from pipeline.dataset import prepare
    from pipeline.errors import UserError
    from pipeline.model import BertForPretraining
    from pipeline.vocab import Vocab
    from pipeline.wikitext import find_split

    parser = argparse.ArgumentParser(description="Evaluate a pretraining checkpoint on a held-out split.")
    parser.add_argument("--output-dir", default="output", help="training output folder (default: output)")
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the newest in --output-dir)")
    parser.add_argument("--data-dir", help="folder with wiki.*.tokens (default: download WikiText-2)")
    parser.add_argument("--split", default="test", help="split to evaluate: train, valid or test (default: test)")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per forward pass (default: 256)")
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    path = Path(args.checkpoint) if args.checkpoint else checkpoint.latest(output)
    if path is None:
        raise UserError(f"no checkpoint in {output / 'checkpoints'}; train first or pass --checkpoint")
    ckpt = checkpoint.load(path)
    cfg = ckpt.config
    vocab = Vocab.load(path.parent.parent / "vocab.json")
    prepared = prepare(find_split(args.data_dir or cfg.data.data_dir, args.split), cfg.data.max_len,
                       cfg.data.min_freq, cfg.data.seed, None, vocab=vocab)
    model = BertForPretraining(cfg.model)
    checkpoint.apply_model_state(model, ckpt.model_state, path)
    metrics = evaluate(model, prepared.pairs, len(vocab), cfg.data.max_len, args.batch_size, cfg.data.mask_prob)
    print(format_metrics(metrics))
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    from pipeline.errors import run_cli

    run_cli(main)
