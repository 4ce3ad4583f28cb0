//! The gRPC face of the reward server: checks an `oxrl.v1.RewardModel` Score request (some
//! sequences, none empty, every token in the vocabulary, not more than a request may carry),
//! hands it to the [`Batcher`], checks the scores that come back (finite) and maps every
//! failure to a status in [`to_status`]. A bad request is a status, never a panic.

use std::sync::Arc;

use proto::reward_model_server::RewardModel as RewardModelService;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::batcher::{BatchError, Batcher};
use crate::metrics::RmMetrics;

/// Sequences one request may carry at most.
pub const MAX_SEQUENCES_PER_REQUEST: usize = 4096;

/// Why a request got no scores.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ScoreError {
    /// The caller's mistake: another try gets the same answer.
    #[error("invalid score request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The model gave a NaN or an infinite score.
    #[error("the reward model scored sequence {index} {value}: not a finite score")]
    NotFinite { index: usize, value: f32 },
}

impl ScoreError {
    /// The `reason` label of `oxrl_rm_errors_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ScoreError::Invalid(_) => "invalid_request",
            ScoreError::Batch(BatchError::Busy(_)) => "busy",
            ScoreError::Batch(BatchError::Stopped) => "stopped",
            ScoreError::Batch(BatchError::Model(_)) => "model",
            ScoreError::NotFinite { .. } => "not_finite",
        }
    }
}

/// The status for `error`: the caller's mistakes `InvalidArgument`, a full queue
/// `ResourceExhausted` (retried by clients), a stopping server `Unavailable`, a failed or
/// non-finite forward pass `Internal`.
pub(crate) fn to_status(error: &ScoreError) -> Status {
    let message = error.to_string();
    match error {
        ScoreError::Invalid(_) => Status::invalid_argument(message),
        ScoreError::Batch(BatchError::Busy(_)) => Status::resource_exhausted(message),
        ScoreError::Batch(BatchError::Stopped) => Status::unavailable(message),
        ScoreError::Batch(BatchError::Model(_)) | ScoreError::NotFinite { .. } => {
            Status::internal(message)
        }
    }
}

/// The sequences of `request`, checked against `vocab_size`.
pub(crate) fn sequences(
    request: proto::ScoreRequest,
    vocab_size: usize,
) -> Result<Vec<Vec<u32>>, ScoreError> {
    let n = request.sequences.len();
    if n == 0 {
        return Err(ScoreError::Invalid("no sequences to score".into()));
    }
    if n > MAX_SEQUENCES_PER_REQUEST {
        return Err(ScoreError::Invalid(format!(
            "{n} sequences in one request; at most {MAX_SEQUENCES_PER_REQUEST}"
        )));
    }
    let mut out = Vec::with_capacity(n);
    for (i, s) in request.sequences.into_iter().enumerate() {
        if s.tokens.is_empty() {
            return Err(ScoreError::Invalid(format!("sequence {i} is empty")));
        }
        if let Some(&id) = s.tokens.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(ScoreError::Invalid(format!(
                "sequence {i} holds token {id}, outside the reward model's vocabulary of \
                 {vocab_size} (is it the policy's tokenizer?)"
            )));
        }
        out.push(s.tokens);
    }
    Ok(out)
}

/// The service over one batcher; cheap to clone.
#[derive(Clone)]
pub(crate) struct RmService {
    pub(crate) batcher: Batcher,
    pub(crate) metrics: Arc<RmMetrics>,
}

impl RmService {
    /// Scores a checked request; the scores are finite.
    async fn score(&self, request: proto::ScoreRequest) -> Result<Vec<f32>, ScoreError> {
        let sequences = sequences(request, self.batcher.vocab_size())?;
        let n = sequences.len() as u64;
        let scores = self.batcher.score(sequences).await?;
        if let Some((index, &value)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ScoreError::NotFinite { index, value });
        }
        self.metrics.requests.inc();
        self.metrics.sequences.inc_by(n);
        Ok(scores)
    }
}

#[tonic::async_trait]
impl RewardModelService for RmService {
    async fn score(
        &self,
        request: Request<proto::ScoreRequest>,
    ) -> Result<Response<proto::ScoreReply>, Status> {
        match RmService::score(self, request.into_inner()).await {
            Ok(scores) => Ok(Response::new(proto::ScoreReply { scores })),
            Err(error) => {
                self.metrics.error(error.reason());
                match &error {
                    ScoreError::Invalid(_) => debug!(%error, "score request refused"),
                    _ => warn!(reason = error.reason(), %error, "score request failed"),
                }
                Err(to_status(&error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn request(seqs: &[&[u32]]) -> proto::ScoreRequest {
        proto::ScoreRequest {
            sequences: seqs
                .iter()
                .map(|s| proto::ScoredSequence { tokens: s.to_vec() })
                .collect(),
        }
    }

    #[test]
    fn bad_requests_are_invalid_arguments_that_say_why() {
        let cases = [
            (request(&[]), "no sequences"),
            (request(&[&[1, 2], &[]]), "sequence 1 is empty"),
            (request(&[&[1, 10]]), "token 10"),
        ];
        for (r, want) in cases {
            let error = sequences(r, 10).unwrap_err();
            let status = to_status(&error);
            assert_eq!(status.code(), Code::InvalidArgument, "{error}");
            assert!(status.message().contains(want), "{status:?}");
        }
        let ok = sequences(request(&[&[1, 9], &[3]]), 10).unwrap();
        assert_eq!(ok, vec![vec![1, 9], vec![3]]);
    }

    #[test]
    fn statuses_say_what_another_try_can_change() {
        let cases = [
            (
                ScoreError::Batch(BatchError::Busy(4)),
                Code::ResourceExhausted,
            ),
            (ScoreError::Batch(BatchError::Stopped), Code::Unavailable),
            (
                ScoreError::Batch(BatchError::Model("x".into())),
                Code::Internal,
            ),
            (
                ScoreError::NotFinite {
                    index: 0,
                    value: f32::NAN,
                },
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(&error).code(), code, "{error}");
        }
    }
}
