//! Admission of one pushed group: wire conversion, validation, lease check, deduplication,
//! then the bounded queue (awaiting it is the backpressure actors feel).

use super::metrics::invalid_reason;
use super::seen::Seen;
use super::Shared;
use proto::push_ack::Outcome;
use proto::PushAck;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use tracing::Instrument;

/// Lease checks the learner remembers before it starts over.
const KNOWN_LEASES_CACHED: usize = 65_536;

/// Decides what to do with `msg` and answers with its acknowledgement; `Err` (UNAVAILABLE)
/// when the lease cannot be checked because the coordinator is unreachable: nothing is
/// decided, and the actor pushes the group again once it is back (rejecting it instead would
/// lose the prompt, whose lease the actor then completes).
pub(crate) async fn admit(
    shared: &Shared,
    msg: proto::RolloutGroup,
) -> Result<PushAck, tonic::Status> {
    let lineage = msg.lineage;
    let (lease_id, group) = rollout::wire::from_wire(msg);
    // The same fields as the actor's lease span and the trainer's step: one group can be
    // followed through the logs of every role.
    let span = tracing::info_span!("intake", lease_id = %lease_id, group_id = %group.group_id);
    admit_group(shared, lease_id, lineage, group)
        .instrument(span)
        .await
}

/// [`admit`] on a group already converted from the wire.
async fn admit_group(
    shared: &Shared,
    lease_id: String,
    lineage: u64,
    group: rollout::RolloutGroup,
) -> Result<PushAck, tonic::Status> {
    let group_id = group.group_id.clone();
    let ack = |outcome: Outcome, reason: String| PushAck {
        group_id: group_id.clone(),
        outcome: outcome as i32,
        reason,
        learner_version: shared.version.load(Ordering::Relaxed),
    };
    if let Err(e) = group.validate(shared.vocab_size) {
        shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
        shared.metrics.reject(invalid_reason(&e));
        tracing::warn!(group = %group_id, reason = %e, "rejected group");
        shared
            .refused_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(group_id.clone());
        return Ok(ack(Outcome::Rejected, e.to_string()));
    }
    let versions = group
        .samples
        .iter()
        .flat_map(|s| s.versions.iter().copied());
    if !shared
        .lineage
        .accepts(lineage, versions, shared.version.load(Ordering::Relaxed))
    {
        // Not trained and not done: the actor leaves the lease to expire and the prompt is
        // leased again under its group id.
        shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
        shared.metrics.reject("stale_lineage");
        tracing::warn!(group = %group_id, lineage, "refused a group sampled with weights of a lost lineage");
        return Ok(ack(
            Outcome::StaleLineage,
            format!("sampled with weights of lineage {lineage}, which this learner's history did not produce"),
        ));
    }
    if let Err((label, reason)) = check_lease(shared, &lease_id, &group.problem_id).await? {
        shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
        shared.metrics.reject(label);
        tracing::warn!(group = %group_id, lease = %lease_id, %reason, "rejected group");
        return Ok(ack(Outcome::Rejected, reason));
    }
    // Insert before queueing: a second copy arriving while the first waits is a duplicate.
    let seen = shared
        .seen_groups
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(&group_id);
    if seen != Seen::Fresh {
        shared.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        shared.metrics.groups_duplicate.inc();
        shared.metrics.reject("duplicate_group");
        let reason = if seen == Seen::Settled {
            "already trained and checkpointed (settled at the coordinator)"
        } else {
            "already received"
        };
        return Ok(ack(Outcome::Duplicate, reason.into()));
    }
    if shared.queue.send(group).await.is_err() {
        shared
            .seen_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&group_id);
        shared.metrics.reject("shutting_down");
        return Ok(ack(
            Outcome::Rejected,
            "the learner is shutting down".into(),
        ));
    }
    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    shared.metrics.groups_accepted.inc();
    tracing::debug!("queued the group for training");
    Ok(ack(Outcome::Accepted, String::new()))
}

/// `Ok(Err((reason label, message)))` when the coordinator does not vouch for the lease,
/// `Err` when it cannot be asked.
async fn check_lease(
    shared: &Shared,
    lease_id: &str,
    problem_id: &str,
) -> Result<Result<(), (&'static str, String)>, tonic::Status> {
    let key = format!("{lease_id}\u{0}{problem_id}");
    if shared
        .known_leases
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&key)
    {
        return Ok(Ok(()));
    }
    let reply = shared
        .coordinator
        .clone()
        .check_lease(proto::CheckLeaseRequest {
            lease_id: lease_id.to_string(),
            problem_id: problem_id.to_string(),
        })
        .await
        .map_err(|s| {
            tracing::warn!(lease = %lease_id, error = %s.message(), "could not check a lease: the actor will push again");
            tonic::Status::unavailable(format!(
                "could not check lease {lease_id} with the coordinator ({}): push again later",
                s.message()
            ))
        })?
        .into_inner();
    if !reply.known {
        return Ok(Err((
            "unknown_lease",
            format!(
                "lease {lease_id:?} for problem {problem_id:?}: {}",
                reply.reason
            ),
        )));
    }
    let mut known = shared
        .known_leases
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // A cache: emptied when full (a miss only asks the coordinator again), so its memory
    // stays bounded on a run of any length.
    if known.len() >= KNOWN_LEASES_CACHED {
        known.clear();
    }
    known.insert(key);
    Ok(Ok(()))
}
