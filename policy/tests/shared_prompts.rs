//! Log-probs of completions that share prompts, each prompt run once
//! (`completion_logprobs`): the same values and the same gradient for every parameter as
//! the written-out sequences (`next_token_logprobs`), with prompts and completions of
//! different lengths and several rows per prompt.

mod common;

use candle_core::{Device, Tensor};
use policy::{batch::left_pad, completion_logprobs, next_token_logprobs, Policy, SharedPrompts};

struct Case {
    prompts: Vec<Vec<u32>>,
    rows: Vec<(usize, Vec<u32>)>,
    /// A weight per completion token, so that every token's gradient counts differently.
    weights: Vec<Vec<f32>>,
}

fn case(m: &policy::ModelDir) -> Case {
    let enc = |s: &str| m.tokenizer.encode(s).unwrap();
    let prompts = vec![enc("12+34="), enc("9+1="), enc("sort 3 1 2:")];
    let rows: Vec<(usize, Vec<u32>)> = vec![
        (0, enc("46")),
        (0, enc("47!")),
        (0, enc("4")),
        (1, enc("10")),
        (1, enc("1000000")),
        (2, enc("1 2 3")),
        (0, enc("46")),
    ];
    let weights = rows
        .iter()
        .enumerate()
        .map(|(r, (_, c))| {
            (0..c.len())
                .map(|k| 0.3 + 0.1 * ((r * 7 + k * 3) % 11) as f32)
                .collect()
        })
        .collect();
    Case {
        prompts,
        rows,
        weights,
    }
}

/// `sum over rows and completion tokens of weight * log-prob`, shared or written out, and
/// each row's completion log-probs.
fn objective(policy: &Policy, c: &Case, shared: bool) -> (Tensor, Vec<Vec<f32>>) {
    let device = policy.device().clone();
    let (logp, starts): (Tensor, Vec<usize>) = if shared {
        let prompts: Vec<&[u32]> = c.prompts.iter().map(Vec::as_slice).collect();
        let rows: Vec<(usize, &[u32])> = c.rows.iter().map(|(p, r)| (*p, r.as_slice())).collect();
        let shared = SharedPrompts {
            prompts: &prompts,
            rows: &rows,
        };
        let logp = completion_logprobs(policy, shared, 0).unwrap();
        (logp, vec![0; c.rows.len()])
    } else {
        let seqs: Vec<Vec<u32>> = c
            .rows
            .iter()
            .map(|(p, r)| [c.prompts[*p].as_slice(), r].concat())
            .collect();
        let (ids, pads) = left_pad(&seqs, 0, &device).unwrap();
        let logp = next_token_logprobs(policy, &ids, &pads, 1.0).unwrap();
        let starts = c
            .rows
            .iter()
            .zip(&pads)
            .map(|((p, _), pad)| pad + c.prompts[*p].len() - 1)
            .collect();
        (logp, starts)
    };
    let cols = logp.dim(1).unwrap();
    let mut w = vec![0f32; c.rows.len() * cols];
    for (r, row) in c.weights.iter().enumerate() {
        for (k, &v) in row.iter().enumerate() {
            w[r * cols + starts[r] + k] = v;
        }
    }
    let w = Tensor::from_vec(w, (c.rows.len(), cols), &device).unwrap();
    let total = (&logp * &w).unwrap().sum_all().unwrap();
    let values = logp.to_vec2::<f32>().unwrap();
    let per_row = c
        .rows
        .iter()
        .enumerate()
        .map(|(r, (_, comp))| values[r][starts[r]..starts[r] + comp.len()].to_vec())
        .collect();
    (total, per_row)
}

#[test]
fn shared_prompts_give_the_written_out_log_probs_and_gradients() {
    for cfg in [common::llama_config(), common::qwen2_config()] {
        let m = common::model(&cfg, 3);
        let (vars, policy) = common::over_vars(&m);
        let c = case(&m);
        let (total_s, rows_s) = objective(&policy, &c, true);
        let (total_w, rows_w) = objective(&policy, &c, false);
        for (a, b) in rows_s.iter().zip(&rows_w) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-4, "log-prob {x} shared, {y} written out");
            }
        }
        let (gs, gw) = (total_s.backward().unwrap(), total_w.backward().unwrap());
        for (name, var) in &vars {
            let (a, b) = (gs.get(var.as_tensor()), gw.get(var.as_tensor()));
            let (a, b) = (a.expect(name), b.expect(name));
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let off = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                off <= 1e-4 * scale.max(1.0),
                "{name}: gradients differ by {off} (scale {scale})"
            );
        }
    }
}

#[test]
fn rows_that_name_no_prompt_or_no_completion_are_refused() {
    let m = common::model(&common::llama_config(), 1);
    let policy = m.policy().unwrap();
    let prompts: Vec<&[u32]> = vec![&[5, 6]];
    for rows in [vec![(1usize, &[7u32][..])], vec![(0, &[][..])]] {
        let shared = SharedPrompts {
            prompts: &prompts,
            rows: &rows,
        };
        assert!(completion_logprobs(&policy, shared, 0).is_err());
    }
    let _ = Device::Cpu;
}
