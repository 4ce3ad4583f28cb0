//! The Llama-family decoder (Llama, Qwen2): RMSNorm, RoPE, SwiGLU, grouped-query attention,
//! optional q/k/v bias and tied embeddings, with Hugging Face parameter names.
//!
//! One forward path serves everyone: the learner runs whole left-padded sequences without a
//! cache and needs every position; actors decode incrementally with a [`KvCache`] kept outside
//! the weights, so weights can be swapped between decode steps. Only differentiable ops are
//! used: RMSNorm, RoPE, the attention softmax and SwiGLU are oxrl's fused CPU kernels with their own
//! backward (`fused.rs`) on f32 CPU tensors, and written-out candle ops elsewhere (candle-nn's
//! fused ones record no gradient).
//! The LM head runs in fp32 whatever the body's dtype. The body computes in the dtype of the
//! weights unless [`Policy::with_compute_dtype`] says otherwise (the learner on a GPU keeps
//! fp32 master weights and computes in bf16: each weight is cast where it is used, and the
//! gradient flows back through the cast to the fp32 variable).

use crate::batch::StepInput;
use crate::config::ModelConfig;
use crate::error::{PolicyError, Result};
use candle_core::{DType, Device, Tensor, D};
use std::collections::HashMap;

/// Per-layer keys and values of the slots decoded so far; owned by the caller.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of slots cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dim(2).unwrap_or(0))
            .unwrap_or(0)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Prepends `n` empty slots to every row (rows whose padding grows by `n`; the attention
    /// mask hides them).
    pub fn pad_left(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            let (b, h, _, d) = k.dims4()?;
            let zeros = Tensor::zeros((b, h, n, d), k.dtype(), k.device())?;
            *k = Tensor::cat(&[&zeros, &*k], 2)?;
            *v = Tensor::cat(&[&zeros, &*v], 2)?;
        }
        Ok(())
    }

    /// Appends the rows of `other`, which must hold as many slots.
    pub fn append_rows(&mut self, other: KvCache) -> Result<()> {
        if self.layers.iter().all(Option::is_none) {
            *self = other;
            return Ok(());
        }
        for (mine, theirs) in self.layers.iter_mut().zip(other.layers) {
            if let (Some((k, v)), Some((ok, ov))) = (mine.as_mut(), theirs) {
                *k = Tensor::cat(&[&*k, &ok], 0)?;
                *v = Tensor::cat(&[&*v, &ov], 0)?;
            }
        }
        Ok(())
    }

    /// Keeps only the rows in `rows` (to drop finished sequences from a batch).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// `weight` transposed into a contiguous `[in, out]` copy ([`Policy::for_sampling`]).
    weight_t: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, i) = x.dims3()?;
        let x2 = x.reshape((b * t, i))?;
        let y = match &self.weight_t {
            Some(wt) => x2.matmul(&wt.to_dtype(x.dtype())?)?,
            None => x2.matmul(&self.weight.to_dtype(x.dtype())?.t()?)?,
        };
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(&bias.to_dtype(x.dtype())?)?,
            None => y,
        };
        Ok(y.reshape((b, t, ()))?)
    }
}

#[derive(Clone)]
struct Block {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The policy network. Cheap to clone (tensors are reference-counted).
#[derive(Clone)]
pub struct Policy {
    cfg: ModelConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
    inv_freq: Tensor,
    /// The LM head transposed into a contiguous `[hidden, vocab]` copy ([`Policy::for_sampling`]).
    lm_head_t: Option<Tensor>,
    device: Device,
    /// The dtype of the body's activations (the LM head is always fp32).
    compute: DType,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("layers", &self.blocks.len())
            .field("hidden", &self.cfg.hidden_size)
            .field("vocab", &self.cfg.vocab_size)
            .finish()
    }
}

/// Checks that `weights` has exactly the tensors `cfg` needs, with the right shapes.
pub fn validate_weights(
    cfg: &ModelConfig,
    weights: &HashMap<String, Tensor>,
    source: &std::path::Path,
) -> Result<()> {
    for (name, expected) in cfg.parameter_shapes() {
        match weights.get(&name) {
            None => {
                return Err(PolicyError::MissingTensor {
                    dir: source.into(),
                    name,
                    expected,
                })
            }
            Some(t) if t.dims() != expected.as_slice() => {
                return Err(PolicyError::ShapeMismatch {
                    name,
                    found: t.dims().to_vec(),
                    expected,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

impl Policy {
    /// Builds the model over `weights` (Hugging Face names). The tensors are shared, not
    /// copied: pass the tensors of `candle_core::Var`s to train them.
    pub fn new(cfg: &ModelConfig, weights: &HashMap<String, Tensor>) -> Result<Self> {
        validate_weights(cfg, weights, std::path::Path::new("<weights>"))?;
        let get = |n: &str| weights[n].clone();
        let opt = |n: &str| weights.get(n).cloned();
        let linear = |p: &str| Linear {
            weight: get(&format!("{p}.weight")),
            bias: opt(&format!("{p}.bias")),
            weight_t: None,
        };
        let blocks = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Block {
                    input_norm: get(&format!("{p}.input_layernorm.weight")),
                    q: linear(&format!("{p}.self_attn.q_proj")),
                    k: linear(&format!("{p}.self_attn.k_proj")),
                    v: linear(&format!("{p}.self_attn.v_proj")),
                    o: linear(&format!("{p}.self_attn.o_proj")),
                    post_norm: get(&format!("{p}.post_attention_layernorm.weight")),
                    gate: linear(&format!("{p}.mlp.gate_proj")),
                    up: linear(&format!("{p}.mlp.up_proj")),
                    down: linear(&format!("{p}.mlp.down_proj")),
                }
            })
            .collect();
        let embed = get("model.embed_tokens.weight");
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            get("lm_head.weight")
        };
        let device = embed.device().clone();
        let compute = embed.dtype();
        let hd = cfg.head_dim();
        let inv_freq: Vec<f32> = (0..hd / 2)
            .map(|i| (1.0 / cfg.rope_theta.powf(2.0 * i as f64 / hd as f64)) as f32)
            .collect();
        Ok(Policy {
            cfg: cfg.clone(),
            embed,
            blocks,
            norm: get("model.norm.weight"),
            lm_head,
            lm_head_t: None,
            inv_freq: Tensor::from_vec(inv_freq, (1, 1, hd / 2), &device)?,
            device,
            compute,
        })
    }

    /// This policy for sampling with weights that stay as they are now. On the CPU it also
    /// keeps every projection's weight (and the LM head) transposed into a contiguous copy:
    /// `x · Wᵀ` through a transposed view of `W` makes candle's matrix product read `W` a
    /// column at a time, 1.6-2.8x slower at the few rows of a decode step than the same
    /// product with the copy (BENCHMARKS.md, "Vectorised kernels, unzeroed products,
    /// transposed sampling weights"). The price
    /// is a second copy of those weights in memory. The copies are taken now: over the
    /// `Var`s of a model in training, take a new sampling policy after every update (the
    /// original follows the variables, the copies do not). Elsewhere (CUDA, where cuBLAS
    /// takes a transposed operand as it is; not measured here) it is the policy itself.
    pub fn for_sampling(&self) -> Result<Policy> {
        let mut p = self.clone();
        if !self.device.is_cpu() {
            return Ok(p);
        }
        for block in &mut p.blocks {
            for l in [
                &mut block.q,
                &mut block.k,
                &mut block.v,
                &mut block.o,
                &mut block.gate,
                &mut block.up,
                &mut block.down,
            ] {
                l.weight_t = Some(l.weight.t()?.contiguous()?);
            }
        }
        p.lm_head_t = Some(p.lm_head.t()?.contiguous()?);
        Ok(p)
    }

    /// Computes the body in `dtype` whatever the weights' dtype (e.g. bf16 over fp32 master
    /// weights); the LM head and log-softmax stay in fp32.
    pub fn with_compute_dtype(mut self, dtype: DType) -> Self {
        self.compute = dtype;
        self
    }

    /// The dtype the body computes in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// The model's config.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Hidden states `[B, t, H]` of the slots in `input`; appends to `cache` when given.
    pub fn forward_hidden(
        &self,
        input: &StepInput,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = input.ids.dims2()?;
        let vocab = self.cfg.vocab_size as u32;
        if let Some(&bad) = input
            .ids
            .flatten_all()?
            .to_vec1::<u32>()?
            .iter()
            .find(|&&i| i >= vocab)
        {
            return Err(PolicyError::TokenOutOfVocab {
                id: bad,
                vocab_size: self.cfg.vocab_size,
            });
        }
        let mut x = self
            .embed
            .index_select(&input.ids.flatten_all()?, 0)?
            .reshape((b, t, ()))?
            .to_dtype(self.compute)?;
        let (cos, sin) = self.rope_tables(&input.positions)?;
        let mask = input.mask.to_dtype(x.dtype())?;
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.blocks.len(), None);
        }
        for (l, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            x = self.block_forward(block, &x, &cos, &sin, &mask, layer_cache)?;
        }
        self.rms_norm(&x, &self.norm)
    }

    /// Logits `[B, t, V]` in fp32 from hidden states (the fp32 LM head).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let x = hidden.to_dtype(DType::F32)?.reshape((b * t, h))?;
        let y = match &self.lm_head_t {
            Some(wt) => x.matmul(&wt.to_dtype(DType::F32)?)?,
            None => x.matmul(&self.lm_head.to_dtype(DType::F32)?.t()?)?,
        };
        Ok(y.reshape((b, t, ()))?)
    }

    /// Logits `[B, t, V]` (fp32) of the slots in `input`.
    pub fn forward(&self, input: &StepInput, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let hidden = self.forward_hidden(input, cache)?;
        self.logits(&hidden)
    }

    fn rope_tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        // angles [B, t, hd/2] -> cos/sin [B, 1, t, hd] (Hugging Face's rotate-half layout).
        let angles = positions
            .to_dtype(DType::F32)?
            .unsqueeze(2)?
            .broadcast_mul(&self.inv_freq)?;
        let cos = Tensor::cat(&[&angles.cos()?, &angles.cos()?], 2)?.unsqueeze(1)?;
        let sin = Tensor::cat(&[&angles.sin()?, &angles.sin()?], 2)?.unsqueeze(1)?;
        let dt = self.compute;
        Ok((cos.to_dtype(dt)?, sin.to_dtype(dt)?))
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        if crate::fused::applies(x) {
            let weight = weight.to_dtype(DType::F32)?;
            return Ok(crate::fused::rms_norm(x, &weight, self.cfg.rms_norm_eps)?);
        }
        let dt = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let ms = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_div(&(ms + self.cfg.rms_norm_eps)?.sqrt()?)?;
        Ok(normed.to_dtype(dt)?.broadcast_mul(&weight.to_dtype(dt)?)?)
    }

    fn block_forward(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let h = self.rms_norm(x, &block.input_norm)?;
        let attn = self.attention(block, &h, cos, sin, mask, cache)?;
        let x = (x + attn)?;
        let h = self.rms_norm(&x, &block.post_norm)?;
        let (gate, up) = (block.gate.forward(&h)?, block.up.forward(&h)?);
        let act = if crate::fused::applies(&gate) {
            crate::fused::swiglu(&gate, &up)?
        } else {
            (candle_nn::ops::silu(&gate)? * up)?
        };
        let mlp = block.down.forward(&act)?;
        Ok((x + mlp)?)
    }

    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, kvh, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = rope(&heads(block.q.forward(x)?, nh)?, cos, sin)?;
        let mut k = rope(&heads(block.k.forward(x)?, kvh)?, cos, sin)?;
        let mut v = heads(block.v.forward(x)?, kvh)?;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        // Grouped-query attention without copying keys and values per query head: the
        // `group` query heads that share a key/value head (heads kv*group .. kv*group+group)
        // are stacked along the rows of one product with it.
        let (group, s) = (nh / kvh, k.dim(2)?);
        let q = q.reshape((b, kvh, group * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = q.matmul(&k.t()?)?.reshape((b, nh, t, s))?;
        let probs = if crate::fused::applies(&scores) && crate::fused::applies(mask) {
            crate::fused::masked_softmax(&scores, mask, scale)?
        } else {
            let scores = (scores * scale)?
                .broadcast_add(mask)?
                .to_dtype(DType::F32)?;
            candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(q.dtype())?
        };
        let out = probs
            .reshape((b, kvh, group * t, s))?
            .matmul(&v)?
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        block.o.forward(&out)
    }
}

/// Rotary embedding with Hugging Face's rotate-half convention; `x` is `[B, heads, t, hd]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if crate::fused::applies(x) && crate::fused::applies(cos) {
        return Ok(crate::fused::rope(x, cos, sin)?);
    }
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::StepInput;

    #[test]
    fn a_sampling_policy_keeps_every_weight_transposed_and_computes_the_same_logits() {
        let cfg = ModelConfig::tiny(40, 24, 2, 4, 2);
        let weights = crate::random_weights(&cfg, 5, &Device::Cpu).unwrap();
        let policy = Policy::new(&cfg, &weights).unwrap();
        let sampler = policy.for_sampling().unwrap();
        for block in &sampler.blocks {
            for l in [
                &block.q,
                &block.k,
                &block.v,
                &block.o,
                &block.gate,
                &block.up,
                &block.down,
            ] {
                let wt = l.weight_t.as_ref().expect("a transposed copy");
                assert!(wt.is_contiguous());
                assert_eq!(
                    wt.dims(),
                    [l.weight.dim(1).unwrap(), l.weight.dim(0).unwrap()]
                );
            }
        }
        assert!(sampler.lm_head_t.is_some() && policy.lm_head_t.is_none());
        let ids = Tensor::new(&[[3u32, 7, 11, 2, 5], [0, 0, 9, 4, 8]], &Device::Cpu).unwrap();
        let input = StepInput::new(ids, &[0, 2], 0).unwrap();
        let logits = |p: &Policy| {
            let t = p.forward(&input, None).unwrap();
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (a, b) = (logits(&policy), logits(&sampler));
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "logits differ by {diff}");
    }
}
