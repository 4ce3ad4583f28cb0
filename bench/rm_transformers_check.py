"""Checks oxrl's reward-model scores against transformers' *ForSequenceClassification.

Run through bench/rm_transformers_check.sh (it reuses bench/torch_baseline.sh's venv):

    bench/rm_transformers_check.sh --oxrl target/release/oxrl --rm runs/rm-tiny --work /tmp/rmcheck

Three checkpoints are scored, each by transformers (fp32, CPU) and by `oxrl rm score`:
  1. --rm: a directory written by `oxrl rm train` (the embedded default's Llama decoder);
  2. a random Qwen2ForSequenceClassification (q/k/v biases, GQA, rope_theta 1e6) that
     transformers writes, with the tokenizer of 1 copied in;
  3. a random LlamaForSequenceClassification with attention_bias = True and GQA.
Sequences: real prompt+completion texts (some ending in EOS) and random token ids of lengths
1 to 48 (never the pad id). transformers scores them one at a time, right-padded in a batch
(its last-non-pad rule) and left-padded with explicit position_ids; oxrl scores them
left-padded in batches of 64 and one at a time. Prints the max abs difference per checkpoint
and a JSON line; exits 1 if any exceeds --tol (1e-4).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys

import torch
import transformers
from transformers import (AutoModelForSequenceClassification, LlamaConfig,
                          LlamaForSequenceClassification, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForSequenceClassification)


def random_classifier(kind, vocab, pad, out, seed):
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, num_labels=1, pad_token_id=pad, tie_word_embeddings=False)
    if kind == "qwen2":
        cfg = Qwen2Config(rope_theta=1e6, **common)
        model = Qwen2ForSequenceClassification(cfg)
    else:
        cfg = LlamaConfig(rope_theta=5e5, attention_bias=True, **common)
        model = LlamaForSequenceClassification(cfg)
    with torch.no_grad():  # larger than the default init, so differences would show
        for p in model.parameters():
            if p.dim() == 1 and "norm" not in "".join(n for n, q in model.named_parameters() if q is p):
                p.normal_(0, 0.1)
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(out, safe_serialization=True)
    return model


def hf_scores(model, seqs, pad):
    out = {}
    with torch.no_grad():
        out["alone"] = [model(input_ids=torch.tensor([s])).logits.item() for s in seqs]
        t = max(map(len, seqs))
        right = torch.tensor([s + [pad] * (t - len(s)) for s in seqs])
        mask = (right != pad).long()
        out["right_padded"] = model(input_ids=right, attention_mask=mask).logits[:, 0].tolist()
        left = torch.tensor([[pad] * (t - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (t - len(s)) + [1] * len(s) for s in seqs])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out["left_padded"] = model(input_ids=left, attention_mask=mask,
                                   position_ids=pos).logits[:, 0].tolist()
    return out


def oxrl_scores(oxrl, d, seqs, work, batch):
    path = os.path.join(work, "ids.json")
    with open(path, "w") as f:
        json.dump({"sequences": seqs}, f)
    res = subprocess.run([oxrl, "rm", "score", "--model", d, "--ids-json", path,
                          "--batch", str(batch)], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["scores"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oxrl", required=True)
    ap.add_argument("--rm", required=True, help="a reward model written by `oxrl rm train`")
    ap.add_argument("--work", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.work, exist_ok=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.rm, "tokenizer.json"))
    with open(os.path.join(a.rm, "config.json")) as f:
        cfg = json.load(f)
    vocab, pad, eos = cfg["vocab_size"], cfg["pad_token_id"], cfg.get("eos_token_id", 2)
    texts = ["12+34=46", "12+34=47", "7+5=12\n", "90+16=106", "31+43=12", "5+5=", "99+99=198"]
    seqs = [tok.encode(t) for t in texts]
    seqs += [s + [eos] for s in seqs[:3]]
    rng = random.Random(0)
    seqs += [[rng.choice([i for i in range(vocab) if i != pad]) for _ in range(n)]
             for n in [1, 2, 3, 5, 8, 13, 21, 34, 48, 17, 9, 40]]
    assert all(pad not in s for s in seqs), "a sequence holds the pad id"

    dirs = {"oxrl rm train (default policy, Llama)": a.rm}
    for kind, seed in [("qwen2", 1), ("llama-bias", 2)]:
        d = os.path.join(a.work, kind)
        shutil.rmtree(d, ignore_errors=True)
        random_classifier(kind, vocab, pad, d, seed)
        shutil.copy(os.path.join(a.rm, "tokenizer.json"), d)
        dirs[f"random {kind} (written by transformers)"] = d

    report = {"torch": torch.__version__, "transformers": transformers.__version__,
              "sequences": len(seqs), "lengths": [min(map(len, seqs)), max(map(len, seqs))],
              "checkpoints": {}}
    worst = 0.0
    for name, d in dirs.items():
        model = AutoModelForSequenceClassification.from_pretrained(d, dtype=torch.float32).eval()
        assert model.config.num_labels == 1, name
        hf = hf_scores(model, seqs, pad)
        ox = {"batched": oxrl_scores(a.oxrl, d, seqs, a.work, 64),
              "alone": oxrl_scores(a.oxrl, d, seqs, a.work, 1)}
        diffs = {f"oxrl {o} vs hf {h}": max(abs(x - y) for x, y in zip(ov, hv))
                 for o, ov in ox.items() for h, hv in hf.items()}
        m = max(diffs.values())
        worst = max(worst, m)
        spread = max(hf["alone"]) - min(hf["alone"])
        print(f"{name}: {type(model).__name__}, score range {spread:.3f}, max |oxrl - hf| {m:.2e}")
        for k, v in diffs.items():
            print(f"    {k}: {v:.2e}")
        report["checkpoints"][name] = {"class": type(model).__name__, "max_abs_diff": m,
                                       "score_range": spread, "diffs": diffs}
    report["max_abs_diff"] = worst
    print(json.dumps(report))
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
