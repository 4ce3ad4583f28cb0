//! Delivering a lease's groups to the learner: pushes them and collects one acknowledgement
//! per group; while the learner is unreachable (restarting, or moved: its new address comes
//! with the coordinator's heartbeats) or cannot check the lease (the coordinator is down),
//! pushes the unacknowledged ones again with backoff. Pushing a group twice is safe: the
//! learner answers one it already has as a duplicate.

use crate::error::ActorError;
use proto::learner_client::LearnerClient;
use proto::transport::{ClientChannel, Retry, Security};
use std::collections::HashMap;
use tokio::sync::watch;

/// A client of the learner at the address the coordinator gave last.
pub(crate) struct LearnerLink {
    security: Security,
    addr: watch::Receiver<String>,
    client: Option<(String, LearnerClient<ClientChannel>)>,
}

impl LearnerLink {
    pub fn new(security: Security, addr: watch::Receiver<String>) -> LearnerLink {
        LearnerLink {
            security,
            addr,
            client: None,
        }
    }

    /// The learner's address now.
    pub fn addr(&self) -> String {
        self.addr.borrow().clone()
    }

    /// A client for the current address (a new one when the address changed); it connects
    /// on first use and reconnects by itself.
    fn client(&mut self) -> Result<LearnerClient<ClientChannel>, ActorError> {
        let addr = self.addr();
        if self.client.as_ref().is_none_or(|(a, _)| *a != addr) {
            let channel =
                self.security
                    .lazy_channel(&addr)
                    .map_err(|source| ActorError::LearnerAddress {
                        addr: addr.clone(),
                        source,
                    })?;
            let client =
                LearnerClient::new(channel).max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
            self.client = Some((addr, client));
        }
        Ok(self.client.as_ref().expect("just set").1.clone())
    }
}

/// Pushes `groups` until every one is acknowledged; the acknowledgements in the order of
/// `groups`, or `None` when `stop` is set first.
pub(crate) async fn deliver(
    link: &mut LearnerLink,
    groups: &[proto::RolloutGroup],
    retry: &mut Retry,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Vec<proto::PushAck>>, ActorError> {
    let mut acks: HashMap<String, proto::PushAck> = HashMap::new();
    loop {
        let pending: Vec<proto::RolloutGroup> = groups
            .iter()
            .filter(|g| !acks.contains_key(&g.group_id))
            .cloned()
            .collect();
        if pending.is_empty() {
            retry.succeeded();
            return Ok(Some(
                groups
                    .iter()
                    .map(|g| acks.remove(&g.group_id).expect("acknowledged"))
                    .collect(),
            ));
        }
        let mut client = link.client()?;
        let attempt = async {
            let mut stream = client
                .push_rollouts(tokio_stream::iter(pending))
                .await?
                .into_inner();
            while let Some(ack) = stream.message().await? {
                acks.insert(ack.group_id.clone(), ack);
            }
            Ok::<(), tonic::Status>(())
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            _ = stop.wait_for(|s| *s) => return Ok(None),
        };
        let unacknowledged = groups
            .iter()
            .filter(|g| !acks.contains_key(&g.group_id))
            .count();
        let failure = match outcome {
            Err(status) => status,
            Ok(()) if unacknowledged > 0 => tonic::Status::unavailable(format!(
                "the learner closed the stream with {unacknowledged} group(s) unacknowledged"
            )),
            Ok(()) => continue,
        };
        let wait = retry.failed(&failure)?;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
    }
}
