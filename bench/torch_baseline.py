#!/usr/bin/env python3
"""PyTorch baseline for `oxrl bench decode|learner --torch` (run it through
torch_baseline.sh, which provides the environment).

The same model directory (a Hugging Face Llama/Qwen2 checkpoint), the same token ids and the
same batch shapes as the Rust suites, in transformers on the CPU in fp32, with
`torch.set_num_threads(--threads)`. Prints one JSON line.

  decode:  sampling at temperature 1 with a KV cache, one token per step for every sequence
           (log-prob of each sampled token recorded, as oxrl does), batch 1 and batch N; then
           teacher-forced log-probs of the N sampled sequences.
  learner: one RL update on groups x group_size sequences of prompt + `tokens` completion
           tokens: forward, fp32 log-softmax, the CISPO loss (truncated, detached importance
           ratio times advantage times log-prob, averaged over tokens), backward, gradient
           clipping at 1 and an AdamW step; against the forward pass alone.
  step:    whole RL steps as `oxrl bench step` writes them (--step-spec JSON: each step's
           prompt tokens and answers, G, the token budget, stop ids, the vocabulary): sample
           G completions of each prompt with `generate` (temperature 1, their log-probs from
           the returned logits), decode and verify them (the last number of the completion
           against the answer, as oxrl's numeric verifier reads these completions), group-
           centred advantages over the batch's std, zero-variance groups dropped, and the
           CISPO update with prompt-level aggregation, clipping and AdamW. The first step is
           a warm-up; the median of the others is reported, by phase.
"""

import argparse
import json
import re
import statistics
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def best_of(reps, f):
    best = float("inf")
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def token_logprobs(logits, targets):
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def sample(model, prompt, batch, new_tokens, gen):
    ids = torch.tensor([prompt] * batch)
    steps = [ids]
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        for i in range(new_tokens):
            logits = out.logits[:, -1, :].float()
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
            token_logprobs(logits, nxt.squeeze(-1))
            steps.append(nxt)
            if i + 1 < new_tokens:
                out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
    return torch.cat(steps, dim=1)


def score(model, seqs):
    with torch.no_grad():
        logits = model(input_ids=seqs).logits[:, :-1, :]
        return token_logprobs(logits, seqs[:, 1:])


def decode(a, model, prompt):
    gen = torch.Generator().manual_seed(1)
    one = best_of(a.reps, lambda: sample(model, prompt, 1, a.new_tokens, gen))
    seqs = []
    batched = best_of(a.reps, lambda: seqs.append(sample(model, prompt, a.batch, a.new_tokens, gen)))
    last = seqs[-1]
    scored = best_of(a.reps, lambda: score(model, last))
    return {
        "decode_b1_tok_s": a.new_tokens / one,
        "decode_batched_tok_s": a.new_tokens * a.batch / batched,
        "score_tok_s": last.shape[0] * (last.shape[1] - 1) / scored,
    }


def learner(a, model, prompt):
    # The same synthetic groups as src/commands/bench/learner_step.rs.
    rows, adv = [], []
    for g in range(a.groups):
        for s in range(a.group_size):
            rows.append(prompt + [4 + (g + s + t) % 90 for t in range(a.tokens)])
            adv.append(float(s % 2))
    seqs = torch.tensor(rows)
    rewards = torch.tensor(adv).view(a.groups, a.group_size)
    advantages = rewards - rewards.mean(dim=1, keepdim=True)
    advantages = (advantages / (advantages.std() + 1e-8)).view(-1, 1)
    p = len(prompt)
    logp_gen = torch.full((seqs.shape[0], a.tokens), -1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=1e-15, weight_decay=0.01)

    def forward():
        with torch.no_grad():
            token_logprobs(model(input_ids=seqs).logits[:, p - 1 : -1, :], seqs[:, p:])

    def step():
        opt.zero_grad(set_to_none=True)
        logp = token_logprobs(model(input_ids=seqs).logits[:, p - 1 : -1, :], seqs[:, p:])
        ratio = torch.exp(logp - logp_gen).clamp(max=4.0).detach()
        loss = -(ratio * advantages * logp).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    tokens = a.groups * a.group_size * a.tokens
    fwd = best_of(a.reps, forward)
    model.train()
    stp = best_of(a.reps, step)
    return {"forward_tok_s": tokens / fwd, "train_step_tok_s": tokens / stp, "tokens_per_step": tokens}


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def verify(text, answer):
    found = NUMBER.findall(text)
    return 1.0 if found and found[-1] == answer.strip() else 0.0


def generate_groups(model, prompts, spec):
    """Left-padded prompts x G through `generate`: the sequences, the completion mask
    (up to and including the first stop token) and each completion token's log-prob."""
    stop = spec["stop"]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[stop[0]] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=spec["temperature"],
            top_k=0, top_p=1.0, max_new_tokens=spec["max_new_tokens"], eos_token_id=stop,
            pad_token_id=stop[0], output_logits=True, return_dict_in_generate=True)
    completion = out.sequences[:, width:]
    logits = torch.stack(out.logits, dim=1)[:, : completion.shape[1]]
    logp = token_logprobs(logits, completion)
    is_stop = torch.isin(completion, torch.tensor(stop))
    ended_before = (torch.cumsum(is_stop.int(), dim=1) - is_stop.int()) > 0
    cmask = (~ended_before).float()
    return out.sequences, torch.cat([mask, cmask.long()], dim=1), cmask, logp, width


def rl_step(model, opt, spec, problems):
    g = spec["group_size"]
    t0 = time.perf_counter()
    prompts = [p["prompt"] for p in problems for _ in range(g)]
    seqs, attn, cmask, logp_gen, width = generate_groups(model, prompts, spec)
    vocab, stop = spec["vocab"], set(spec["stop"])
    rewards = []
    for i, row in enumerate(seqs[:, width:].tolist()):
        text = "".join(vocab[t] for t, m in zip(row, cmask[i].tolist()) if m and t not in stop)
        rewards.append(verify(text, problems[i // g]["answer"]))
    t1 = time.perf_counter()
    r = torch.tensor(rewards).view(-1, g)
    keep = (r.max(dim=1).values > r.min(dim=1).values).nonzero().flatten()
    if len(keep) > 0:
        adv = r[keep] - r[keep].mean(dim=1, keepdim=True)
        adv = (adv / (adv.std() + 1e-8)).view(-1, 1)
        rows = (keep.view(-1, 1) * g + torch.arange(g)).flatten()
        s, a, cm, lg = seqs[rows], attn[rows], cmask[rows], logp_gen[rows]
        opt.zero_grad(set_to_none=True)
        pos = (a.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(input_ids=s, attention_mask=a, position_ids=pos).logits[:, width - 1 : -1, :]
        logp = token_logprobs(logits, s[:, width:])
        ratio = torch.exp(logp - lg).clamp(max=spec["eps_max"]).detach()
        per_token = -(ratio * adv * logp) * cm
        # Prompt-level aggregation: each group's mean over its tokens, then the mean of groups.
        per_group = per_token.view(len(keep), -1).sum(dim=1) / cm.view(len(keep), -1).sum(dim=1).clamp(min=1)
        per_group.mean().backward()
        if spec["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec["max_grad_norm"])
        opt.step()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, sum(rewards) / len(rewards)


def steps(a, model):
    spec = json.load(open(a.step_spec))
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.999), eps=1e-15,
                            weight_decay=spec["weight_decay"])
    model.train()
    times = [rl_step(model, opt, spec, problems) for problems in spec["steps"]][1:]
    med = lambda xs: statistics.median_low(xs)
    return {
        "sample_s": med([t[0] for t in times]),
        "update_s": med([t[1] for t in times]),
        "step_s": med([t[0] + t[1] for t in times]),
        "pass_rate": sum(t[2] for t in times) / max(len(times), 1),
    }


def matmul(a):
    """x @ w.T for each m x k x n of --shapes (as nn.Linear computes it) and the weight
    gradient x.T @ dy, best of --reps."""
    out, grad_w = [], []
    for shape in a.shapes.split(","):
        m, k, n = (int(d) for d in shape.split("x"))
        x, w, dy = torch.randn(m, k), torch.randn(n, k), torch.randn(m, n)
        out.append(2.0 * m * k * n / best_of(a.reps, lambda: x @ w.t()) / 1e9)
        grad_w.append(2.0 * m * k * n / best_of(a.reps, lambda: x.t() @ dy) / 1e9)
    return {"gflops": out, "grad_w_gflops": grad_w}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", choices=["decode", "learner", "step", "matmul"])
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--prompt-ids", default="", help="comma-separated prompt token ids")
    ap.add_argument("--step-spec", help="the steps' JSON, for the step suite")
    ap.add_argument("--shapes", help="m x k x n products, comma-separated, for the matmul suite")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.suite == "matmul":
        out = matmul(a)
        out.update({"suite": a.suite, "torch": torch.__version__, "threads": a.threads})
        print(json.dumps(out))
        return
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model.eval()
    prompt = [int(t) for t in a.prompt_ids.split(",") if t]
    if a.suite == "step":
        out = steps(a, model)
    else:
        out = decode(a, model, prompt) if a.suite == "decode" else learner(a, model, prompt)
    out.update(
        {
            "suite": a.suite,
            "params": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": a.threads,
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
