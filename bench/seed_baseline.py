"""The seed's model and training loop (d2l "Pretraining BERT", PaddlePaddle), re-typed as the baseline
that bench/train.py measures in the same run: dygraph, d2l's layer structure (transpose-based multi-head
attention, masked softmax by sequence mask, Add&Norm with dropout), Adam lr 0.01, mean-reduced losses.

    python bench/seed_baseline.py --data-dir ../shared/data/wikitext-2 --steps 10
Prints one JSON line: pairs/s overall and steady (after 2 steps), the first step's time and clock.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import paddle  # noqa: E402  (deliberately without pipeline.core.runtime's settings: the seed had none)
from paddle import nn  # noqa: E402

from pipeline.data.batches import PretrainingData  # noqa: E402
from pipeline.data.wikitext import find_split  # noqa: E402
from pipeline.data.wikitext_pairs import wikitext_examples  # noqa: E402


class SeedAttention(nn.Layer):
    def __init__(self, hidden, heads, dropout):
        super().__init__()
        self.heads = heads
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(hidden, hidden) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def split(self, x):  # [B, L, H] -> [B * heads, L, H / heads]
        b, length, h = x.shape
        x = x.reshape([b, length, self.heads, -1]).transpose([0, 2, 1, 3])
        return x.reshape([-1, length, h // self.heads])

    def forward(self, x, valid_lens):
        q, k, v = self.split(self.w_q(x)), self.split(self.w_k(x)), self.split(self.w_v(x))
        scores = paddle.bmm(q, k.transpose([0, 2, 1])) / (q.shape[-1] ** 0.5)
        lens = paddle.repeat_interleave(valid_lens, self.heads, axis=0)
        keep = paddle.arange(scores.shape[-1]).unsqueeze(0) < lens.unsqueeze(1)
        scores = paddle.where(keep.unsqueeze(1).expand(scores.shape), scores, paddle.full_like(scores, -1e6))
        out = paddle.bmm(self.dropout(nn.functional.softmax(scores, -1)), v)
        b = x.shape[0]
        out = out.reshape([b, self.heads, x.shape[1], -1]).transpose([0, 2, 1, 3]).reshape(x.shape)
        return self.w_o(out)


class SeedBlock(nn.Layer):
    def __init__(self, hidden, ffn, heads, dropout):
        super().__init__()
        self.attention = SeedAttention(hidden, heads, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.dense1, self.dense2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x, valid_lens):
        y = self.norm1(self.drop1(self.attention(x, valid_lens)) + x)
        return self.norm2(self.drop2(self.dense2(nn.functional.relu(self.dense1(y)))) + y)


class SeedBert(nn.Layer):
    def __init__(self, vocab, hidden=128, ffn=256, heads=2, layers=2, dropout=0.2, max_len=1000):
        super().__init__()
        self.tokens, self.segments = nn.Embedding(vocab, hidden), nn.Embedding(2, hidden)
        self.pos = self.create_parameter([1, max_len, hidden], default_initializer=nn.initializer.Normal())
        self.blocks = nn.LayerList([SeedBlock(hidden, ffn, heads, dropout) for _ in range(layers)])
        self.mlm = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden), nn.Linear(hidden, vocab))
        self.hidden = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.nsp = nn.Linear(hidden, 2)

    def forward(self, tokens, segments, valid_lens, pred_positions):
        x = self.tokens(tokens) + self.segments(segments) + self.pos[:, :tokens.shape[1], :]
        for block in self.blocks:
            x = block(x, valid_lens)
        b, p = pred_positions.shape
        batch_idx = paddle.repeat_interleave(paddle.arange(b), p)
        masked = x[batch_idx, pred_positions.reshape([-1])].reshape([b, p, -1])
        return self.mlm(masked), self.nsp(self.hidden(x[:, 0, :]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="0: Paddle's default")
    args = parser.parse_args()
    if args.threads:
        paddle.base.core.set_num_threads(args.threads)
    examples = wikitext_examples(find_split(args.data_dir, args.split), 64, 5, 0, None)
    data = PretrainingData(examples.pairs, examples.vocab, 64, dynamic_masking=False)
    paddle.seed(0)
    net = SeedBert(len(examples.vocab))
    loss = nn.CrossEntropyLoss()
    trainer = paddle.optimizer.Adam(parameters=net.parameters(), learning_rate=0.01)
    times, first_done = [], 0.0
    for step in range(args.steps):
        b = {k: paddle.to_tensor(v) for k, v in data.batch(step, 512).items()}
        start = time.perf_counter()
        mlm_hat, nsp_hat = net(b["token_ids"], b["segments"], b["valid_lens"], b["pred_positions"])
        mlm_l = loss(mlm_hat.reshape([-1, mlm_hat.shape[-1]]), b["mlm_labels"].reshape([-1])) * b["mlm_weights"].reshape([-1, 1])
        mlm_l = mlm_l.sum() / (b["mlm_weights"].sum() + 1e-8)
        total = mlm_l + loss(nsp_hat, b["nsp_labels"])
        trainer.clear_grad()
        total.backward()
        trainer.step()
        float(total)
        times.append(time.perf_counter() - start)
        first_done = first_done or time.time()
    steady = times[2:] or times
    print(json.dumps({"pairs_per_sec": 512 * len(times) / sum(times), "first_step_s": times[0], "first_step_done": first_done,
                      "steady_pairs_per_sec": 512 * len(steady) / sum(steady)}))


if __name__ == "__main__":
    main()
