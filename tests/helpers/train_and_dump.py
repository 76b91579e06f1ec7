"""Test helper: train a few steps as pipeline/train.py does, then dump this rank's parameters.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/helpers/train_and_dump.py OUT [train.py flags]
"""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np  # noqa: E402

from pipeline import train  # noqa: E402  (sets up the environment before paddle is imported)


def main() -> None:
    dump_dir, argv = Path(sys.argv[1]), sys.argv[2:]
    cfg = train.resolve_config(train.build_parser().parse_args(argv)).cfg
    rank, world, _ = train.init_distributed(cfg)
    output = Path(cfg.train.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    tokenizer, data = train.objective_of(cfg).data(cfg, output, False, None)
    cfg = train.with_settings(cfg, {"model.vocab_size": len(tokenizer.vocab)})
    trainer = train.Trainer(cfg, data, rank, world, output)
    for batch in data.iterate(0, cfg.train.steps, cfg.train.batch_size, rank, world):
        trainer.train_step(batch)
    params = {name: p.numpy() for name, p in trainer.model.named_parameters()}
    np.savez(dump_dir / f"world{world}_rank{rank}.npz", **params)


if __name__ == "__main__":
    main()
