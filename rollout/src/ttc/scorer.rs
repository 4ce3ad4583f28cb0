//! What `best-of-rm:N` ranks samples by: a [`SampleScorer`] lent by the caller, in
//! practice an outcome reward model (`policy::RewardModel`, `oxrl eval --rm DIR`), scoring
//! each of a prompt's completions as prompt + completion tokens.

use policy::RewardModel;

/// Scores completions of one prompt; higher is better.
pub trait SampleScorer {
    /// One score per completion of `prompt` (token ids as the model was shown them).
    fn score(&self, prompt: &[u32], completions: &[Vec<u32>]) -> policy::Result<Vec<f32>>;
}

impl SampleScorer for RewardModel {
    fn score(&self, prompt: &[u32], completions: &[Vec<u32>]) -> policy::Result<Vec<f32>> {
        // Rows are left-padded, so the pad id only fills masked slots.
        let pad = self.decoder().config().pad_token_id.unwrap_or(0);
        let seqs: Vec<Vec<u32>> = completions
            .iter()
            .map(|c| prompt.iter().chain(c).copied().collect())
            .collect();
        self.scores(&seqs, pad)
    }
}
