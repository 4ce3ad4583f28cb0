//! A whole conversation over real gRPC: register, heartbeat, lease, check, complete, publish,
//! status, the health service, and a clean shutdown.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{health_status, start_coordinator, SERVICE_NAME};
use coordinator::RunConfig;
use proto::{
    CheckLeaseRequest, CompleteRequest, HeartbeatRequest, LeaseRefusal, LeaseRequest,
    ProblemResult, PublishVersionRequest, RegisterRequest, Role, StatusRequest,
};
use tonic_health::pb::health_check_response::ServingStatus;

const LEARNER_ADDR: &str = "http://127.0.0.1:7001";

fn settings() -> RunConfig {
    let mut run = RunConfig {
        task: "addition:2".to_string(),
        seed: 7,
        train_size: 16,
        ..RunConfig::default()
    };
    run.update.max_lag = 3;
    run.update.lr = 1e-5;
    run.pipeline.retire_min_samples = 4;
    run
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn register_lease_complete_status_then_shut_down() {
    let server = start_coordinator(settings()).await;
    let channel = server.channel().await;
    for service in ["", SERVICE_NAME] {
        let status = health_status(channel.clone(), service).await.unwrap();
        assert_eq!(status, ServingStatus::Serving, "health of '{service}'");
    }
    let mut client = proto::coordinator_client::CoordinatorClient::new(channel)
        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);

    let learner = client
        .register(RegisterRequest {
            role: Role::Learner as i32,
            advertise_addr: LEARNER_ADDR.to_string(),
            name: "learner".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(learner.member_id, "learner-1");
    let actor = client
        .register(RegisterRequest {
            role: Role::Actor as i32,
            advertise_addr: String::new(),
            name: "gpu0".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(actor.member_id, "actor-1");
    // The run config travels once, whole: the lag bound and the heartbeat inside it.
    let received = RunConfig::from_wire(&actor.run_config).unwrap();
    assert_eq!(received, settings());
    assert_eq!(actor.learner_addr, LEARNER_ADDR);
    assert_eq!((actor.learner_version, received.update.max_lag), (0, 3));
    assert_eq!(received.pipeline.heartbeat_interval_ms, 500);
    let actor_id = actor.member_id;

    let beat = client
        .heartbeat(HeartbeatRequest {
            member_id: actor_id.clone(),
            version: 0,
            env: Some(proto::EnvTotals {
                calls: 12,
                seconds: 0.25,
                errors: [("env_timeout".to_string(), 2)].into_iter().collect(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!beat.stop && !beat.unknown_member);
    assert_eq!(beat.learner_addr, LEARNER_ADDR);
    // The actor's environment figures show in the status.
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    let env = status.actors[0].env.clone().expect("env totals");
    assert_eq!((env.calls, env.errors.get("env_timeout")), (12, Some(&2)));

    let before = wall_ms();
    let lease = client
        .lease(LeaseRequest {
            member_id: actor_id.clone(),
            version: 0,
            max_prompts: 4,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lease.refused(), LeaseRefusal::Unspecified);
    assert_eq!(lease.lease_id, "lease-1");
    let deadline_in = lease.deadline_unix_ms.saturating_sub(before);
    assert!(
        (59_000..=61_000).contains(&deadline_in),
        "deadline {deadline_in} ms away, want about 60 s"
    );
    let ids: Vec<&str> = lease
        .prompts
        .iter()
        .map(|p| p.problem_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "addition-2/train/0",
            "addition-2/train/1",
            "addition-2/train/2",
            "addition-2/train/3"
        ]
    );
    for prompt in &lease.prompts {
        let (a, b) = prompt.prompt.trim_end_matches('=').split_once('+').unwrap();
        let sum: u64 = a.parse::<u64>().unwrap() + b.parse::<u64>().unwrap();
        assert_eq!(prompt.answer, sum.to_string(), "{}", prompt.prompt);
    }

    for (problem_id, known, reason) in [
        ("addition-2/train/2", true, ""),
        ("addition-2/train/9", false, "problem not in lease"),
    ] {
        let check = client
            .check_lease(CheckLeaseRequest {
                lease_id: lease.lease_id.clone(),
                problem_id: problem_id.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((check.known, check.reason.as_str()), (known, reason));
    }
    let unknown = client
        .check_lease(CheckLeaseRequest {
            lease_id: "lease-7".to_string(),
            problem_id: "addition-2/train/0".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (unknown.known, unknown.reason.as_str()),
        (false, "unknown lease")
    );

    // The first problem is solved every time (4 samples = retire_min_samples): it retires.
    let results: Vec<ProblemResult> = lease
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| ProblemResult {
            problem_id: p.problem_id.clone(),
            rewards: vec![if i == 0 { 1.0 } else { 0.0 }; 4],
        })
        .collect();
    let complete = CompleteRequest {
        member_id: actor_id.clone(),
        lease_id: lease.lease_id.clone(),
        results,
    };
    let accepted = client
        .complete(complete.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(accepted.accepted);
    let again = client.complete(complete).await.unwrap().into_inner();
    assert!(!again.accepted, "a lease completes once");

    client
        .publish_version(PublishVersionRequest {
            version: 1,
            zero_variance_problem_ids: vec!["addition-2/train/1".to_string()],
            done: false,
            stats: None,
            ..PublishVersionRequest::default()
        })
        .await
        .unwrap();

    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.learner_version, 1);
    assert_eq!(status.actors.len(), 1);
    let actor_status = &status.actors[0];
    assert_eq!(
        (actor_status.member_id.as_str(), actor_status.name.as_str()),
        ("actor-1", "gpu0")
    );
    assert!(actor_status.alive);
    assert!(actor_status.last_heartbeat_ms_ago < 10_000);
    assert_eq!((status.pool_active, status.pool_retired), (15, 1));
    assert_eq!((status.pool_size, status.epoch, status.epochs), (16, 0, 0));
    assert!(!status.exhausted);
    assert_eq!((status.leases_outstanding, status.leases_expired), (0, 0));
    assert_eq!(status.prompts_completed, 4);
    assert_eq!(status.zero_variance_groups, 1);
    assert!(!status.done);
    assert_eq!(status.max_lag, 3);

    // Unknown members are NotFound; a finished run refuses leases with "stopping".
    let err = client
        .lease(LeaseRequest {
            member_id: "actor-42".to_string(),
            version: 1,
            max_prompts: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    client
        .publish_version(PublishVersionRequest {
            version: 2,
            zero_variance_problem_ids: Vec::new(),
            done: true,
            stats: None,
            ..PublishVersionRequest::default()
        })
        .await
        .unwrap();
    let beat = client
        .heartbeat(HeartbeatRequest {
            member_id: actor_id.clone(),
            version: 1,
            env: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(beat.stop);
    assert_eq!(beat.learner_version, 2);
    let refused = client
        .lease(LeaseRequest {
            member_id: actor_id,
            version: 2,
            max_prompts: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.refused(), LeaseRefusal::Stopping);
    assert!(refused.prompts.is_empty());

    drop(client);
    server
        .stop()
        .await
        .expect("serve returns Ok after shutdown");
}

#[tokio::test]
async fn a_bad_registration_is_invalid_argument() {
    let server = start_coordinator(settings()).await;
    let mut client = server.client().await;
    let err = client
        .register(RegisterRequest {
            role: Role::Learner as i32,
            advertise_addr: String::new(),
            name: "learner".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("advertise_addr"),
        "{}",
        err.message()
    );
    drop(client);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stale_weights_are_refused_over_the_wire() {
    let server = start_coordinator(settings()).await;
    let mut client = server.client().await;
    let actor = client
        .register(RegisterRequest {
            role: Role::Actor as i32,
            advertise_addr: String::new(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .member_id;
    client
        .publish_version(PublishVersionRequest {
            version: 10,
            ..PublishVersionRequest::default()
        })
        .await
        .unwrap();
    let lease = |version| LeaseRequest {
        member_id: actor.clone(),
        version,
        max_prompts: 1,
    };
    let stale = client.lease(lease(6)).await.unwrap().into_inner();
    assert_eq!(
        (stale.refused(), stale.learner_version),
        (LeaseRefusal::StaleWeights, 10)
    );
    let fresh = client.lease(lease(7)).await.unwrap().into_inner();
    assert_eq!(
        fresh.refused(),
        LeaseRefusal::Unspecified,
        "7 + k (3) == 10 is allowed"
    );
    assert_eq!(fresh.prompts.len(), 1);
    drop(client);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_spent_pool_refuses_with_exhausted_and_stops_the_actors() {
    let server = start_coordinator(RunConfig {
        train_size: 2,
        epochs: 1,
        ..settings()
    })
    .await;
    let mut client = server.client().await;
    let actor = client
        .register(RegisterRequest {
            role: Role::Actor as i32,
            advertise_addr: String::new(),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .member_id;
    let ask = || LeaseRequest {
        member_id: actor.clone(),
        version: 0,
        max_prompts: 4,
    };
    let lease = client.lease(ask()).await.unwrap().into_inner();
    assert_eq!(lease.prompts.len(), 2, "one epoch of the 2-prompt pool");
    let out = client.lease(ask()).await.unwrap().into_inner();
    assert_eq!(
        out.refused(),
        LeaseRefusal::PoolEmpty,
        "a lease is still out"
    );
    let results = lease
        .prompts
        .iter()
        .map(|p| ProblemResult {
            problem_id: p.problem_id.clone(),
            rewards: vec![0.0; 4],
        })
        .collect();
    client
        .complete(CompleteRequest {
            member_id: actor.clone(),
            lease_id: lease.lease_id.clone(),
            results,
        })
        .await
        .unwrap();
    // Not for good until a learner checkpoint holds the groups (a learner restart would
    // bring them back).
    let out = client.lease(ask()).await.unwrap().into_inner();
    assert_eq!(out.refused(), LeaseRefusal::PoolEmpty);
    let group_ids = lease.prompts.iter().map(|p| p.group_id.clone()).collect();
    client
        .publish_version(PublishVersionRequest {
            durable_group_ids: group_ids,
            ..PublishVersionRequest::default()
        })
        .await
        .unwrap();
    let refused = client.lease(ask()).await.unwrap().into_inner();
    assert_eq!(refused.refused(), LeaseRefusal::Exhausted);
    let beat = client
        .heartbeat(HeartbeatRequest {
            member_id: actor.clone(),
            version: 0,
            env: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(beat.stop, "nothing left to generate");
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(status.exhausted && !status.done, "{status:?}");
    assert_eq!((status.epoch, status.epochs, status.pool_size), (1, 1, 2));
    drop(client);
    server.stop().await.unwrap();
}
