//! Property tests of the environment server's session table with the built-in environments:
//! any sequence of Reset, Step, Close and reaping, with made-up and reused session ids,
//! unknown environments, turns out of order, and any text for prompts, answers and actions,
//! is answered with a value or an error, never a panic; the count of open sessions never
//! passes the limit, and once every session is closed nothing is counted open or held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tasks::Problem;

use crate::sessions::{Limits, Opening, Sessions};

const MAX_SESSIONS: usize = 3;
const IDS: &[&str] = &["a", "b", "c", "d", ""];

#[derive(Debug, Clone)]
enum Call {
    Reset {
        session: usize,
        env: &'static str,
        prompt: String,
        answer: String,
        seed: u64,
    },
    Step {
        session: usize,
        turn: u32,
        action: String,
    },
    Close(usize),
    /// Reap with the clock moved on by this many seconds.
    Reap(u64),
}

fn any_call() -> impl Strategy<Value = Call> {
    let env = prop_oneof![
        Just(""),
        Just("single"),
        Just("calculator"),
        Just("guess"),
        Just("nope")
    ];
    let text = prop_oneof![".{0,12}", "[0-9+*= -]{0,10}", Just("99".to_string())];
    prop_oneof![
        (0..IDS.len(), env, text.clone(), text.clone(), any::<u64>()).prop_map(
            |(session, env, prompt, answer, seed)| Call::Reset {
                session,
                env,
                prompt,
                answer,
                seed
            }
        ),
        (0..IDS.len(), 0u32..5, text).prop_map(|(session, turn, action)| Call::Step {
            session,
            turn,
            action
        }),
        (0..IDS.len()).prop_map(Call::Close),
        (0u64..1200).prop_map(Call::Reap),
    ]
}

fn sessions() -> Sessions {
    let verifier: Arc<dyn tasks::Verifier> = Arc::new(tasks::ExactVerifier);
    let envs = ["single", "calculator", "guess"]
        .iter()
        .map(|name| tasks::env::builtin(name, verifier.clone()).unwrap())
        .collect();
    Sessions::new(
        envs,
        Limits {
            max_sessions: MAX_SESSIONS,
            idle_ttl: Duration::from_secs(600),
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_sequence_of_calls_is_answered_and_nothing_leaks(
        calls in proptest::collection::vec(any_call(), 1..30),
    ) {
        let table = sessions();
        let mut now = Instant::now();
        for call in calls {
            match call {
                Call::Reset { session, env, prompt, answer, seed } => {
                    let opening = Opening {
                        session: IDS[session].to_string(),
                        env: env.to_string(),
                        problem: Problem {
                            id: format!("p/{session}"),
                            prompt,
                            answer,
                            solution: String::new(),
                        },
                        seed,
                    };
                    let _ = table.reset(opening, now);
                }
                Call::Step { session, turn, action } => {
                    let _ = table.step(IDS[session], turn, &action, now);
                }
                Call::Close(session) => {
                    prop_assert!(table.close(IDS[session]).is_ok());
                }
                Call::Reap(seconds) => {
                    now += Duration::from_secs(seconds);
                    prop_assert!(table.reap(now).is_ok());
                }
            }
            prop_assert!(table.open() <= MAX_SESSIONS, "{} open", table.open());
            prop_assert!(table.open() <= table.held());
        }
        for id in IDS {
            prop_assert!(table.close(id).is_ok());
        }
        prop_assert_eq!((table.open(), table.held()), (0, 0));
    }
}
