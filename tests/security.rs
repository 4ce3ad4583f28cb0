//! Authentication and transport security on loopback, with the real binaries: with a token,
//! every server refuses calls without it or with a wrong one (and uses nothing they carried)
//! while its gRPC health check stays open; with TLS, only clients that trust the CA get a
//! call through; and a whole run works with TLS and a token on every connection.

mod common;

use common::{
    first_weights_chunk, probe_lease_with, push_acks_with, read_jsonl, start_coordinator,
    start_learner, start_learner_with_env, two_sample_group, write_run_config, RoleProcess,
};
use proto::coordinator_client::CoordinatorClient;
use proto::learner_client::LearnerClient;
use proto::transport::{AuthToken, Security, TOKEN_ENV};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TOKEN: &str = "test-token-5f3a9c";

fn write_config(dir: &Path, steps: u64) -> PathBuf {
    let text = format!(
        "steps = {steps}\nprompts_per_step = 4\ngroup_size = 4\neval_every = 0\ncheckpoint_every = 0\n\
         [pipeline]\nprompts_per_lease = 2\nlease_timeout_s = 5.0\nactor_timeout_s = 2.0\nheartbeat_interval_ms = 100\nlearner_queue = 8\n"
    );
    write_run_config(dir, &text)
}

fn write_token(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

fn with_token(token: &str) -> Security {
    Security::default().with_token(AuthToken::parse(token, "test").unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn coordinator(
    security: &Security,
    url: &str,
) -> CoordinatorClient<proto::transport::ClientChannel> {
    CoordinatorClient::new(security.channel(url).await.unwrap())
}

async fn status(c: &mut CoordinatorClient<proto::transport::ClientChannel>) -> proto::StatusReply {
    c.status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn health(security: &Security, url: &str, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(security.channel(url).await.unwrap());
    let reply = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("health check of {service:?} at {url}: {s}"))
        .into_inner();
    ServingStatus::try_from(reply.status).unwrap()
}

/// Without a token, the gRPC health check at `url` answers SERVING overall and for `service`.
async fn assert_probes_open(url: &str, service: &str) {
    for service in ["", service] {
        assert_eq!(
            health(&Security::default(), url, service).await,
            ServingStatus::Serving
        );
    }
}

fn assert_unauthenticated<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    what: &str,
    says: &str,
) {
    let status = result.expect_err(what);
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "{what}: {status}"
    );
    assert!(
        status.message().contains(says),
        "{what}: {:?} should say {says:?}",
        status.message()
    );
}

fn register(role: proto::Role, name: &str) -> proto::RegisterRequest {
    proto::RegisterRequest {
        role: role as i32,
        advertise_addr: String::new(),
        name: name.into(),
    }
}

#[test]
fn the_coordinator_refuses_calls_without_the_token_and_uses_nothing_they_carry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, 4);
    let token = write_token(d);
    let coord = start_coordinator(d, &cfg, &["--auth-token-file", token.to_str().unwrap()]);
    let url = coord.url();
    runtime().block_on(async {
        let right = with_token(TOKEN);
        let mut none = coordinator(&Security::default(), &url).await;
        let mut wrong = coordinator(&with_token("not-the-token"), &url).await;
        let mut ok = coordinator(&right, &url).await;

        assert_unauthenticated(
            none.status(proto::StatusRequest {}).await,
            "status, no token",
            "missing bearer token",
        );
        assert_unauthenticated(
            wrong.status(proto::StatusRequest {}).await,
            "status, wrong token",
            "wrong bearer token",
        );
        assert_unauthenticated(
            none.register(register(proto::Role::Actor, "intruder"))
                .await,
            "register, no token",
            "missing bearer token",
        );
        assert_unauthenticated(
            wrong
                .register(register(proto::Role::Actor, "intruder"))
                .await,
            "register, wrong token",
            "wrong bearer token",
        );
        // A learner registering with a wrong token would take over the run's learner address.
        let mut fake_learner = register(proto::Role::Learner, "fake-learner");
        fake_learner.advertise_addr = "http://203.0.113.1:1".into();
        assert_unauthenticated(
            wrong.register(fake_learner).await,
            "learner register",
            "wrong bearer token",
        );
        assert_unauthenticated(
            wrong
                .publish_version(proto::PublishVersionRequest {
                    version: 99,
                    done: true,
                    ..Default::default()
                })
                .await,
            "publish, wrong token",
            "wrong bearer token",
        );
        let st = status(&mut ok).await;
        assert!(
            st.actors.is_empty(),
            "an unauthenticated register was used: {st:?}"
        );
        assert_eq!((st.learner_version, st.done), (0, false), "{st:?}");

        // A member with the token leases; a completion with the wrong token changes nothing.
        let me = ok
            .register(register(proto::Role::Actor, "member"))
            .await
            .unwrap()
            .into_inner();
        let lease = ok
            .lease(proto::LeaseRequest {
                member_id: me.member_id.clone(),
                version: 0,
                max_prompts: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(lease.refused(), proto::LeaseRefusal::Unspecified);
        let complete = proto::CompleteRequest {
            member_id: me.member_id.clone(),
            lease_id: lease.lease_id.clone(),
            results: lease
                .prompts
                .iter()
                .map(|p| proto::ProblemResult {
                    problem_id: p.problem_id.clone(),
                    rewards: vec![1.0; 4],
                })
                .collect(),
        };
        assert_unauthenticated(
            wrong.complete(complete.clone()).await,
            "complete, wrong token",
            "wrong bearer token",
        );
        assert_unauthenticated(
            wrong
                .lease(proto::LeaseRequest {
                    member_id: me.member_id.clone(),
                    version: 0,
                    max_prompts: 2,
                })
                .await,
            "lease, wrong token",
            "wrong bearer token",
        );
        let st = status(&mut ok).await;
        assert_eq!(
            (st.leases_outstanding, st.prompts_completed),
            (1, 0),
            "{st:?}"
        );
        assert!(ok.complete(complete).await.unwrap().into_inner().accepted);
        let st = status(&mut ok).await;
        assert_eq!(
            (st.leases_outstanding, st.prompts_completed),
            (0, 2),
            "{st:?}"
        );

        // Probes need no token.
        assert_probes_open(&url, "oxrl.v1.Coordinator").await;
    });
    coord.stop();
}

/// A well-formed group for the first prompt of `lease`, under the coordinator's group id.
fn valid_group(lease: &proto::LeaseReply) -> proto::RolloutGroup {
    let prompt = &lease.prompts[0];
    two_sample_group(&prompt.group_id, &lease.lease_id, &prompt.problem_id, 0)
}

/// Pushes `group` and returns the outcomes, or the status the call failed with.
async fn push(
    security: &Security,
    url: &str,
    group: proto::RolloutGroup,
) -> Result<Vec<i32>, tonic::Status> {
    let mut client = LearnerClient::new(security.channel(url).await.unwrap());
    let acks = push_acks_with(&mut client, vec![group]).await?;
    Ok(acks.iter().map(|a| a.outcome).collect())
}

#[test]
fn the_learner_refuses_pushes_and_subscriptions_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, 4);
    let token = write_token(d);
    let coord = start_coordinator(d, &cfg, &["--auth-token-file", token.to_str().unwrap()]);
    let curl = coord.url();
    // The learner takes the token from the environment, as `oxrl run` hands it over.
    let run = d.join("run");
    let learner = start_learner_with_env(d, &curl, &run, &[], &[(TOKEN_ENV, TOKEN)]);
    let lurl = learner.url();
    runtime().block_on(async {
        let right = with_token(TOKEN);
        let mut c = coordinator(&right, &curl).await;
        let lease = probe_lease_with(&mut c, 1, Duration::from_secs(60)).await;
        let group = valid_group(&lease);

        let no_token = push(&Security::default(), &lurl, group.clone()).await;
        assert_unauthenticated(no_token, "push, no token", "missing bearer token");
        let wrong = push(&with_token("not-the-token"), &lurl, group.clone()).await;
        assert_unauthenticated(wrong, "push, wrong token", "wrong bearer token");
        let mut intruder = LearnerClient::new(Security::default().channel(&lurl).await.unwrap());
        let weights = intruder
            .subscribe_weights(proto::SubscribeWeightsRequest {
                after_version: 0,
                member_id: String::new(),
                lineage: 0,
            })
            .await;
        assert_unauthenticated(
            weights.map(|_| ()),
            "weights, no token",
            "missing bearer token",
        );

        // Nothing of the refused pushes was admitted: the same group with the token is new,
        // and only a second copy of it is a duplicate.
        use proto::push_ack::Outcome;
        let first = push(&right, &lurl, group.clone()).await.unwrap();
        assert_eq!(
            first,
            vec![Outcome::Accepted as i32],
            "a refused push was used"
        );
        let again = push(&right, &lurl, group).await.unwrap();
        assert_eq!(again, vec![Outcome::Duplicate as i32]);

        let mut member = LearnerClient::new(right.channel(&lurl).await.unwrap());
        let chunk = first_weights_chunk(&mut member).await;
        assert!(matches!(
            chunk.part,
            Some(proto::weights_chunk::Part::Header(ref h)) if h.version == 0
        ));

        assert_probes_open(&lurl, "oxrl.v1.Learner").await;
    });
    learner.stop();
    coord.stop();
}

/// A test PKI written to `dir`: a CA, a server certificate it signed for 127.0.0.1 and
/// localhost (with its key), and an unrelated second CA.
/// The HTTP port of a role with a token and TLS: HTTPS only, `/metrics` and `/api/status`
/// need the token, `/healthz` and the dashboard page do not.
async fn metrics_port_takes_the_token_over_tls(addr: &str, ca: &Path) {
    let (head, _) = https_get(addr, ca, "/metrics", None).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, body) = https_get(addr, ca, "/metrics", Some(TOKEN)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("oxrl_learner_version"), "{body}");
    let (head, _) = https_get(addr, ca, "/api/status", Some("wrong")).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    for open in ["/healthz", "/"] {
        let (head, _) = https_get(addr, ca, open, None).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{open}: {head}");
    }
    // Cleartext HTTP gets no HTTP answer.
    let addr = addr.to_string();
    let cleartext = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(!cleartext.contains("HTTP/1.1"), "{cleartext}");
}

/// `GET path` over HTTPS, trusting `ca`, with `token` as a bearer token: head and body.
async fn https_get(addr: &str, ca: &Path, path: &str, token: Option<&str>) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The server may close without close_notify: what was read is the answer.
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_string(), body.to_string())
}

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

fn new_ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

fn write_pki(dir: &Path) -> Pki {
    let (ca, issuer) = new_ca("oxrl test CA");
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oxrl test server");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (other, _) = new_ca("some other CA");
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_ca: dir.join("other-ca.pem"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::write(&pki.other_ca, other.pem()).unwrap();
    pki
}

fn trusting(ca: &Path) -> Security {
    with_token(TOKEN)
        .with_ca_pem(std::fs::read(ca).unwrap())
        .unwrap()
}

#[test]
fn over_tls_only_clients_that_trust_the_ca_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, 4);
    let token = write_token(d);
    let pki = write_pki(d);
    let mut coord = start_coordinator(
        d,
        &cfg,
        &[
            "--auth-token-file",
            token.to_str().unwrap(),
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let metrics = coord.metrics_addr();
    let addr = coord.addr.clone().unwrap();
    runtime().block_on(async {
        metrics_port_takes_the_token_over_tls(&metrics, &pki.ca).await;
        for url in [
            format!("https://{addr}"),
            format!("https://localhost:{}", addr.rsplit(':').next().unwrap()),
        ] {
            let mut c = coordinator(&trusting(&pki.ca), &url).await;
            let st = c
                .status(proto::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            assert!(!st.done, "{url}: {st:?}");
        }
        // Probes over TLS need the CA, not the token.
        let probe = Security::default()
            .with_ca_pem(std::fs::read(&pki.ca).unwrap())
            .unwrap();
        assert_eq!(
            health(&probe, &format!("https://{addr}"), "").await,
            ServingStatus::Serving
        );

        // A client that trusts another CA fails the handshake.
        let err = trusting(&pki.other_ca)
            .channel(&format!("https://{addr}"))
            .await
            .expect_err("a client trusting another CA must not connect");
        assert!(err.is_unreachable(), "{err}");
        let text = err.to_string().to_lowercase();
        assert!(
            text.contains("certificate") || text.contains("issuer"),
            "{err}"
        );

        // A plaintext client gets no answer: it connects to TCP, but no call completes.
        let plain = with_token(TOKEN);
        let call = async {
            let mut c = CoordinatorClient::new(plain.channel(&format!("http://{addr}")).await?);
            c.status(proto::StatusRequest {}).await.map_err(|s| {
                proto::transport::TransportError::Connect {
                    url: addr.clone(),
                    detail: s.to_string(),
                }
            })
        };
        let outcome = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("a plaintext call to a TLS server must fail, not hang");
        assert!(
            outcome.is_err(),
            "a plaintext call got through: {outcome:?}"
        );
    });
    coord.stop();
}

#[test]
fn a_run_with_tls_and_a_token_on_every_connection_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let steps = 3;
    let cfg = write_config(d, steps);
    let token = write_token(d);
    let pki = write_pki(d);
    let (ca, cert, key) = (
        pki.ca.to_str().unwrap(),
        pki.cert.to_str().unwrap(),
        pki.key.to_str().unwrap(),
    );
    let token_file = token.to_str().unwrap();
    let coord = start_coordinator(
        d,
        &cfg,
        &[
            "--auth-token-file",
            token_file,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
    );
    // The plain http:// URL is upgraded to TLS by a client with a CA.
    let url = coord.url();
    let run = d.join("run");
    let mut learner = start_learner(
        d,
        &url,
        &run,
        &[
            "--auth-token-file",
            token_file,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-ca",
            ca,
        ],
    );
    let actors: Vec<RoleProcess> = (0..2)
        .map(|i| {
            let name = format!("actor-{i}");
            RoleProcess::start_with_env(
                &[
                    "actor",
                    "--coordinator",
                    &url,
                    "--name",
                    &name,
                    "--tls-ca",
                    ca,
                ],
                &[(TOKEN_ENV, TOKEN)],
                &d.join(format!("{name}.log")),
                false,
            )
        })
        .collect();
    let finished = learner
        .wait(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the run did not finish; see {}", d.display()));
    assert!(
        finished.success(),
        "learner failed; see {}",
        d.join("l.log").display()
    );
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), steps as usize);
    assert_eq!(lines.last().unwrap()["step"], steps);
    // The actors were let in (their groups were trained) and stop by themselves.
    for (i, mut actor) in actors.into_iter().enumerate() {
        let status = actor
            .wait(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("actor-{i} did not stop after the run"));
        assert!(
            status.success(),
            "actor-{i} failed; see its log in {}",
            d.display()
        );
    }
    let log = std::fs::read_to_string(d.join("l.log")).unwrap();
    assert!(!log.contains("refused an unauthenticated request"), "{log}");
    coord.stop();
}
