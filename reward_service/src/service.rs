//! The gRPC face of the reward server: checks an `oxrl.v1.RewardModel` Score request (some
//! sequences, none empty or longer than the model's context, every token in the vocabulary,
//! not more than a request may carry),
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

/// What a request's sequences must fit: the model's vocabulary and context length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fits {
    pub vocab_size: usize,
    pub max_len: usize,
}

/// The sequences of `request`, checked against the model (`fits`).
pub(crate) fn sequences(
    request: proto::ScoreRequest,
    fits: Fits,
) -> Result<Vec<Vec<u32>>, ScoreError> {
    let Fits {
        vocab_size,
        max_len,
    } = fits;
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
        if s.tokens.len() > max_len {
            return Err(ScoreError::Invalid(format!(
                "sequence {i} has {} tokens; the reward model takes at most {max_len}",
                s.tokens.len()
            )));
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
        let fits = Fits {
            vocab_size: self.batcher.vocab_size(),
            max_len: self.batcher.max_len(),
        };
        let sequences = sequences(request, fits)?;
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

    const FITS: Fits = Fits {
        vocab_size: 10,
        max_len: 8,
    };

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
            (request(&[&[1; 9]]), "at most 8"),
        ];
        for (r, want) in cases {
            let error = sequences(r, FITS).unwrap_err();
            let status = to_status(&error);
            assert_eq!(status.code(), Code::InvalidArgument, "{error}");
            assert!(status.message().contains(want), "{status:?}");
        }
        let ok = sequences(request(&[&[1, 9], &[3]]), FITS).unwrap();
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

#[cfg(test)]
mod props {
    //! Any Score request is checked into sequences the model can take, or refused as an
    //! invalid argument that says why; never a panic.

    use super::*;
    use proptest::prelude::*;

    const FITS: Fits = Fits {
        vocab_size: 32,
        max_len: 16,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_score_request_is_checked_or_refused(
            seqs in proptest::collection::vec(proptest::collection::vec(0u32..40, 0..20), 0..6),
        ) {
            let request = proto::ScoreRequest {
                sequences: seqs
                    .iter()
                    .map(|s| proto::ScoredSequence { tokens: s.clone() })
                    .collect(),
            };
            match sequences(request, FITS) {
                Ok(out) => {
                    prop_assert_eq!(&out, &seqs);
                    prop_assert!(!out.is_empty());
                    for s in &out {
                        prop_assert!(!s.is_empty() && s.len() <= FITS.max_len);
                        prop_assert!(s.iter().all(|&t| (t as usize) < FITS.vocab_size));
                    }
                }
                Err(e) => prop_assert_eq!(to_status(&e).code(), tonic::Code::InvalidArgument),
            }
        }
    }
}
