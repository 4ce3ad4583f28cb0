//! Every parameter must receive a gradient: candle's fused ops silently cut the graph.

mod common;

use candle_core::Tensor;
use policy::{batch::left_pad, next_token_logprobs};

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    for cfg in [common::llama_config(), common::qwen2_config()] {
        let m = common::model(&cfg, 1);
        let (vars, policy) = common::over_vars(&m);
        let seqs = vec![
            m.tokenizer.encode("12+3=15").unwrap(),
            m.tokenizer.encode("9=9").unwrap(),
        ];
        let (ids, pads) = left_pad(&seqs, 0, &candle_core::Device::Cpu).unwrap();
        let logp = next_token_logprobs(&policy, &ids, &pads, 1.0).unwrap();
        let loss = logp.sum_all().unwrap().neg().unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} got no gradient"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
        let _: &Tensor = &logp;
    }
}
