//! Matmul suite: the matrix products of a learner step on each bench model, alone (x · Wᵀ as
//! `Linear` computes them, the same with Wᵀ kept as a contiguous copy as sampling policies
//! do, and the weight gradient xᵀ · dy of backward; fp32), in candle and (`--torch`) in
//! PyTorch on the same shapes and threads (`--rows 32`: a decode step's shapes). It measures the kernel's own ceiling: the learner step and scoring spend
//! most of their time in these products, so oxrl / PyTorch here bounds what the whole step
//! can reach without a faster matmul.

use super::torch::{self, Outcome};
use super::{bench_models, best_of};
use candle_core::{Device, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Rows of every product: the tokens of one learner-suite step (8 groups x 8 samples x
    /// (6 prompt + 32 completion tokens)).
    #[arg(long, default_value_t = 2432)]
    rows: usize,
    /// Only the default model (skip the ~20 M config).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also time the same products in PyTorch (bench/torch_baseline.sh).
    #[arg(long)]
    torch: bool,
}

/// The products of one decoder layer and the LM head: (name, k = input width, n = output).
fn shapes(c: &policy::ModelConfig) -> Vec<(&'static str, usize, usize)> {
    let h = c.hidden_size;
    let kv = c.num_key_value_heads.unwrap_or(c.num_attention_heads) * (h / c.num_attention_heads);
    vec![
        ("q/o", h, h),
        ("k/v", h, kv),
        ("up/gate", h, c.intermediate_size),
        ("down", c.intermediate_size, h),
        ("lm head", h, c.vocab_size),
    ]
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.rows > 0 && a.reps > 0,
        "--rows and --reps must be at least 1"
    );
    let tmp = std::env::temp_dir().join(format!("oxrl-bench-matmul-{}", std::process::id()));
    let mut rows = Vec::new();
    println!(
        "{:<8} {:<16} {:>16} {:>12} {:>12} {:>10}",
        "model", "product", "m x k x n", "oxrl", "PyTorch", "oxrl/PT"
    );
    for (name, m) in bench_models(!a.quick)? {
        let shapes = shapes(&m.config);
        let pt = if a.torch {
            let spec: Vec<String> = shapes
                .iter()
                .map(|(_, k, n)| format!("{}x{k}x{n}", a.rows))
                .collect();
            let extra = vec![
                "--shapes".into(),
                spec.join(","),
                "--reps".into(),
                a.reps.to_string(),
            ];
            std::fs::create_dir_all(&tmp)?;
            match torch::run("matmul", &tmp, &[], &extra, true) {
                Outcome::Ran(v) => Some(v),
                Outcome::Skipped(why) => {
                    println!("PyTorch baseline skipped: {why}");
                    None
                }
            }
        } else {
            None
        };
        for (i, (product, k, n)) in shapes.iter().enumerate() {
            let x = Tensor::randn(0f32, 1.0, (a.rows, *k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1.0, (*n, *k), &Device::Cpu)?;
            let dy = Tensor::randn(0f32, 1.0, (a.rows, *n), &Device::Cpu)?;
            let flop = 2.0 * (a.rows * k * n) as f64;
            let fwd = flop / best_of(a.reps, || Ok(x.matmul(&w.t()?).map(|_| ())?))? / 1e9;
            // The same product with Wᵀ kept as a contiguous copy, as sampling policies do
            // (`Policy::for_sampling`).
            let wt = w.t()?.contiguous()?;
            let kept = flop / best_of(a.reps, || Ok(x.matmul(&wt).map(|_| ())?))? / 1e9;
            // The weight gradient: xᵀ · dy, a reduction over the rows.
            let dw = flop / best_of(a.reps, || Ok(x.t()?.matmul(&dy).map(|_| ())?))? / 1e9;
            let theirs = |key: &str| {
                pt.as_ref()
                    .and_then(|v| v[key][i].as_f64())
                    .unwrap_or(f64::NAN)
            };
            let (pt_fwd, pt_dw) = (theirs("gflops"), theirs("grad_w_gflops"));
            for (what, ours, pt) in [
                ("", fwd, pt_fwd),
                (" Wᵀ kept", kept, pt_fwd),
                (" dW", dw, pt_dw),
            ] {
                println!(
                    "{name:<8} {:<16} {:>16} {ours:>7.1} GF/s {pt:>7.1} GF/s {:>9.2}x",
                    format!("{product}{what}"),
                    format!("{}x{k}x{n}", a.rows),
                    ours / pt
                );
            }
            rows.push(serde_json::json!({
                "model": name, "product": product, "m": a.rows, "k": k, "n": n,
                "gflops": fwd, "torch_gflops": pt_fwd, "vs_torch": fwd / pt_fwd,
                "kept_t_gflops": kept, "kept_t_vs_torch": kept / pt_fwd,
                "grad_w_gflops": dw, "torch_grad_w_gflops": pt_dw, "grad_w_vs_torch": dw / pt_dw,
            }));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "{}",
        serde_json::json!({"suite": "matmul", "results": rows})
    );
    Ok(())
}
