//! The token and TLS of `proto::transport` on the environment service: a client with the
//! server's token (and, over TLS, its CA) plays; a missing or wrong token is refused at once
//! as `Invalid` (not retried: another try would be refused again), and says which token to
//! give.

mod common;

use std::time::{Duration, Instant};

use common::{builtins, client_runtime, connect, guess_problem, play_guess, Served};
use environment::Limits;
use proto::transport::{AuthToken, Security};
use tasks::{EnvError, EnvFactory};

const TOKEN: &str = "environment-test-token-0123456789";

fn with_token(token: &str) -> Security {
    Security::default().with_token(AuthToken::parse(token, "test").unwrap())
}

#[test]
fn a_missing_or_wrong_token_is_refused_at_once() {
    let served = Served::start(builtins(&["guess"], Limits::default()), with_token(TOKEN));
    let rt = client_runtime();
    let problem = guess_problem(3, 0);

    let right = connect(
        &served.url(),
        "guess",
        &with_token(TOKEN),
        Duration::from_secs(5),
        3,
        &rt,
    );
    let (_, reward) = play_guess(right.make().unwrap().as_mut(), &problem);
    assert_eq!(reward, 1.0);

    for client in [Security::default(), with_token("not-the-token")] {
        // Many attempts, a long deadline: a refusal must not use them.
        let envs = connect(
            &served.url(),
            "guess",
            &client,
            Duration::from_secs(30),
            50,
            &rt,
        );
        let started = Instant::now();
        let err = envs.make().unwrap().reset(&problem, 0).unwrap_err();
        assert!(matches!(err, EnvError::Invalid(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("Unauthenticated") && text.contains("--auth-token-file"),
            "{text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused, yet retried for {:?}",
            started.elapsed()
        );
    }
    assert_eq!(served.server.sessions_open(), 0);
}

/// A CA and a server certificate it signed for 127.0.0.1 (PEM): (ca, cert, key).
fn pki() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn episodes_run_over_tls_with_the_token() {
    let (ca, cert, key) = pki();
    let server_security = with_token(TOKEN)
        .with_server_identity_pem(cert, key)
        .unwrap();
    let served = Served::start(builtins(&["guess"], Limits::default()), server_security);
    let rt = client_runtime();
    let client = with_token(TOKEN).with_ca_pem(ca).unwrap();
    let envs = connect(
        &served.url(),
        "guess",
        &client,
        Duration::from_secs(5),
        3,
        &rt,
    );
    let (_, reward) = play_guess(envs.make().unwrap().as_mut(), &guess_problem(3, 1));
    assert_eq!(reward, 1.0);
    // A client that dials plaintext cannot talk to it.
    let plain = connect(
        &served.url(),
        "guess",
        &with_token(TOKEN),
        Duration::from_millis(500),
        2,
        &rt,
    );
    assert!(plain
        .make()
        .unwrap()
        .reset(&guess_problem(3, 1), 0)
        .is_err());
}
