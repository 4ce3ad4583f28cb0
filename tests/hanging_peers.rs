//! A peer that accepts connections and never answers (a hung process, a black-holed proxy):
//! clients built from `Security` give up within their timeouts with an error that says so,
//! for a unary call, a stream, a TLS handshake, and the actor and learner roles pointed at a
//! hanging coordinator.

use proto::transport::{Security, Timeouts};
use std::time::{Duration, Instant};

/// Accepts TCP connections on loopback and holds them open without reading or writing.
struct HangingPeer {
    addr: std::net::SocketAddr,
}

impl HangingPeer {
    fn start() -> HangingPeer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().map_while(Result::ok) {
                held.push(conn);
            }
        });
        HangingPeer { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn short_timeouts() -> Security {
    Security::default().with_timeouts(Timeouts {
        connect: Duration::from_millis(500),
        request: Duration::from_millis(500),
        keepalive_interval: Duration::from_millis(250),
        keepalive_timeout: Duration::from_millis(500),
    })
}

/// Far longer than any of the timeouts above, far shorter than "forever".
const DEADLINE: Duration = Duration::from_secs(15);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn unary_and_streaming_calls_to_a_hanging_peer_give_up_within_the_request_timeout() {
    let peer = HangingPeer::start();
    runtime().block_on(async {
        let security = short_timeouts();
        let call = async {
            let channel = security
                .channel(&peer.url())
                .await
                .map_err(|e| e.to_string())?;
            let mut c = proto::coordinator_client::CoordinatorClient::new(channel);
            c.status(proto::StatusRequest {})
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        };
        gives_up_with_a_timeout(
            call,
            "a unary call to a hanging peer must give up, not wait forever",
        )
        .await;

        let stream = async {
            let channel = security
                .channel(&peer.url())
                .await
                .map_err(|e| e.to_string())?;
            let mut l = proto::learner_client::LearnerClient::new(channel);
            l.subscribe_weights(proto::SubscribeWeightsRequest {
                after_version: 0,
                member_id: String::new(),
                lineage: 0,
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        };
        gives_up_with_a_timeout(
            stream,
            "a stream from a hanging peer must give up, not wait forever",
        )
        .await;
    });
}

/// Runs `call` (to a hanging peer): it must fail within 5 s (`hangs` says it did not end by
/// [`DEADLINE`]) with an error that says it timed out.
async fn gives_up_with_a_timeout(
    call: impl std::future::Future<Output = Result<(), String>>,
    hangs: &str,
) {
    let started = Instant::now();
    let err = tokio::time::timeout(DEADLINE, call)
        .await
        .expect(hangs)
        .expect_err("a hanging peer answered");
    println!("gave up after {:?}: {err}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.to_lowercase().contains("timeout") || err.to_lowercase().contains("timed out"),
        "{err}"
    );
}

#[test]
fn a_tls_handshake_with_a_hanging_peer_gives_up_within_the_connect_timeout() {
    let peer = HangingPeer::start();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let security = short_timeouts().with_ca_pem(ca.cert.pem()).unwrap();
    runtime().block_on(async {
        let started = Instant::now();
        let err = tokio::time::timeout(DEADLINE, security.channel(&peer.url()))
            .await
            .expect("a TLS handshake with a hanging peer must give up, not wait forever")
            .expect_err("a hanging peer completed a TLS handshake");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert!(err.is_unreachable(), "{err}");
        let text = err.to_string();
        println!("gave up after {:?}: {text}", started.elapsed());
        assert!(
            text.starts_with(&format!("cannot connect to https://{}", peer.addr)),
            "{text}"
        );
    });
}

/// Runs `run`, `who` (a role, started at `started`) pointed at `peer`: it must fail before
/// [`DEADLINE`] with an error that names the coordinator and says it did not answer.
async fn fails_naming_the_coordinator<T: std::fmt::Debug, E: std::fmt::Display>(
    run: impl std::future::Future<Output = Result<T, E>>,
    peer: &HangingPeer,
    started: Instant,
    who: &str,
) {
    let err = match tokio::time::timeout(DEADLINE, run).await {
        Err(elapsed) => panic!("{who} must not wait forever on a hanging coordinator: {elapsed:?}"),
        Ok(Ok(ran)) => panic!("{who} ran against a peer that never answers: {ran:?}"),
        Ok(Err(err)) => err,
    };
    let text = err.to_string();
    println!("gave up after {:?}: {text}", started.elapsed());
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
    assert!(
        text.contains(&peer.url()),
        "the error should name the coordinator: {text}"
    );
    assert!(text.contains("did not answer"), "{text}");
}

#[test]
fn an_actor_pointed_at_a_hanging_coordinator_fails_with_a_clear_message() {
    let peer = HangingPeer::start();
    runtime().block_on(async {
        let started = Instant::now();
        let url = peer.url();
        let run = actor::run_actor(
            &url,
            "patient",
            short_timeouts(),
            None,
            std::future::pending::<()>(),
        );
        fails_naming_the_coordinator(run, &peer, started, "an actor").await;
    });
}

#[test]
fn a_learner_pointed_at_a_hanging_coordinator_fails_with_a_clear_message() {
    let peer = HangingPeer::start();
    let out = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let advertise = format!("http://{}", listener.local_addr().unwrap());
        let started = Instant::now();
        let url = peer.url();
        let launch = learner::server::LearnerLaunch {
            coordinator_url: url.clone(),
            security: short_timeouts(),
            advertise,
            out: out.path().to_path_buf(),
            metrics_listener: None,
            gpus: 0,
        };
        let run = learner::server::run_learner(launch, listener, std::future::pending::<()>());
        fails_naming_the_coordinator(run, &peer, started, "a learner").await;
    });
}
