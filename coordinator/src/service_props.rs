//! Property tests of the coordinator's gRPC handlers: any sequence of requests, with fields
//! drawn from what a confused or hostile member might send (unknown ids, huge versions and
//! counts, NaN and negative figures, zero-variance lists of anything), is answered with a
//! reply or a status, never a panic; and afterwards the coordinator still serves a fresh actor
//! its lease and answers its status.

use proptest::prelude::*;
use proto::coordinator_server::Coordinator as _;
use tonic::Request;

use crate::handle::Coordinator;
use crate::pool::tests::FixedSource;

/// Ids a request may name: real ones (members, leases and problems the run hands out) and
/// made-up ones.
fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..4).prop_map(|i| format!("actor-{i}")),
        (1u32..3).prop_map(|i| format!("learner-{i}")),
        (1u32..6).prop_map(|i| format!("lease-{i}")),
        (0u32..8).prop_map(|i| format!("fixed/{i}")),
        ".{0,6}",
    ]
}

fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1.0),
        any::<f64>(),
        0.0..1.0
    ]
}

#[derive(Debug, Clone)]
enum Call {
    Register(proto::RegisterRequest),
    Heartbeat(proto::HeartbeatRequest),
    Lease(proto::LeaseRequest),
    Complete(proto::CompleteRequest),
    CheckLease(proto::CheckLeaseRequest),
    Publish(proto::PublishVersionRequest),
    Status,
}

fn any_call() -> impl Strategy<Value = Call> {
    let rewards = proptest::collection::vec(
        prop_oneof![Just(f32::NAN), Just(1.0f32), Just(0.0f32), any::<f32>()],
        0..6,
    );
    let results = proptest::collection::vec((any_id(), rewards), 0..4).prop_map(|r| {
        r.into_iter()
            .map(|(problem_id, rewards)| proto::ProblemResult {
                problem_id,
                rewards,
            })
            .collect()
    });
    let stats = (
        any::<u64>(),
        any_float(),
        any_float(),
        proptest::collection::vec(any::<u64>(), 0..4),
    )
        .prop_map(
            |(step, reward_mean, step_seconds, lag_tokens)| proto::StepStats {
                step,
                reward_mean,
                step_seconds,
                lag_tokens,
                ..Default::default()
            },
        );
    prop_oneof![
        (any::<i32>(), ".{0,8}", ".{0,8}").prop_map(|(role, advertise_addr, name)| {
            Call::Register(proto::RegisterRequest {
                role: role.rem_euclid(4),
                advertise_addr,
                name,
            })
        }),
        (any_id(), any::<u64>(), any_float()).prop_map(|(member_id, version, seconds)| {
            Call::Heartbeat(proto::HeartbeatRequest {
                member_id,
                version: version % 16,
                env: Some(proto::EnvTotals {
                    calls: version,
                    seconds,
                    errors: Default::default(),
                }),
            })
        }),
        (any_id(), any::<u64>(), any::<u32>()).prop_map(|(member_id, version, max_prompts)| {
            Call::Lease(proto::LeaseRequest {
                member_id,
                version: if version % 2 == 0 {
                    version % 8
                } else {
                    version
                },
                max_prompts,
            })
        }),
        (any_id(), any_id(), results).prop_map(|(member_id, lease_id, results)| {
            Call::Complete(proto::CompleteRequest {
                member_id,
                lease_id,
                results,
            })
        }),
        (any_id(), any_id()).prop_map(|(lease_id, problem_id)| {
            Call::CheckLease(proto::CheckLeaseRequest {
                lease_id,
                problem_id,
            })
        }),
        (
            any::<u64>(),
            proptest::collection::vec(any_id(), 0..3),
            any::<bool>(),
            proptest::option::of(stats),
            proptest::collection::vec(any_id(), 0..3),
            proptest::collection::vec(any_id(), 0..3),
        )
            .prop_map(
                |(version, zero_variance_problem_ids, done, stats, durable, requeue)| {
                    Call::Publish(proto::PublishVersionRequest {
                        version: version % 32,
                        zero_variance_problem_ids,
                        done,
                        stats,
                        durable_group_ids: durable,
                        requeue_group_ids: requeue,
                    })
                },
            ),
        Just(Call::Status),
    ]
}

/// Makes `call`; the answer does not matter, only that there is one.
async fn make(coordinator: &Coordinator, call: Call) {
    let _ = match call {
        Call::Register(r) => coordinator.register(Request::new(r)).await.map(|_| ()),
        Call::Heartbeat(r) => coordinator.heartbeat(Request::new(r)).await.map(|_| ()),
        Call::Lease(r) => coordinator.lease(Request::new(r)).await.map(|_| ()),
        Call::Complete(r) => coordinator.complete(Request::new(r)).await.map(|_| ()),
        Call::CheckLease(r) => coordinator.check_lease(Request::new(r)).await.map(|_| ()),
        Call::Publish(r) => coordinator
            .publish_version(Request::new(r))
            .await
            .map(|_| ()),
        Call::Status => coordinator
            .status(Request::new(proto::StatusRequest {}))
            .await
            .map(|_| ()),
    };
}

/// A fresh actor registers and gets a lease (or a refusal that says why), and status answers.
async fn still_serves(coordinator: &Coordinator) -> Result<(), TestCaseError> {
    let member_id = coordinator
        .register(Request::new(proto::RegisterRequest {
            role: proto::Role::Actor as i32,
            advertise_addr: String::new(),
            name: "after".into(),
        }))
        .await
        .map_err(|s| TestCaseError::fail(format!("register after the storm: {s}")))?
        .into_inner()
        .member_id;
    let status = coordinator
        .status(Request::new(proto::StatusRequest {}))
        .await
        .map_err(|s| TestCaseError::fail(format!("status after the storm: {s}")))?
        .into_inner();
    let lease = coordinator
        .lease(Request::new(proto::LeaseRequest {
            member_id,
            version: status.learner_version,
            max_prompts: 2,
        }))
        .await
        .map_err(|s| TestCaseError::fail(format!("lease after the storm: {s}")))?
        .into_inner();
    prop_assert!(
        !lease.prompts.is_empty() || lease.refused() != proto::LeaseRefusal::Unspecified,
        "a lease is granted or refused with a reason: {lease:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_sequence_of_requests_is_answered_and_the_coordinator_keeps_serving(
        calls in proptest::collection::vec(any_call(), 1..24),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let coordinator = Coordinator::from_source(
                crate::test_run(|_| {}),
                Box::new(FixedSource { len: Some(64) }),
            );
            for call in calls {
                make(&coordinator, call).await;
            }
            still_serves(&coordinator).await
        })?;
    }
}
