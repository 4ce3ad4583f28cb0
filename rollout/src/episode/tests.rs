//! The engine's guarantees: a one-turn episode is exactly today's sample, environment tokens
//! are masked and the model's keep the sampling invariant across turns, caps hold, a failing
//! environment drops its group with the reason, and rows keep decoding while a remote
//! environment is answering.

use super::*;
use policy::{FixedWeights, ModelDir, Policy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tasks::env::{builtin, EnvStep, Environment};
use tasks::{NumericVerifier, Problem, Split, Verifier};

fn model() -> ModelDir {
    policy::default_model::embedded().unwrap()
}

fn problems(task: &str, n: u64) -> Vec<Problem> {
    let (name, difficulty) = task.split_once(':').unwrap();
    let source = tasks::builtin(name, Some(difficulty.parse().unwrap()), 0).unwrap();
    (0..n).map(|i| source.problem(Split::Train, i)).collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("g{i}")).collect()
}

fn params(m: &ModelDir, max_new_tokens: usize, seed: u64) -> SamplingParams {
    SamplingParams {
        max_new_tokens,
        stop_tokens: m.tokenizer.eos_ids(),
        seed,
        ..Default::default()
    }
}

fn run(
    policy: &Policy,
    tok: &Tokenizer,
    envs: Arc<dyn EnvFactory>,
    problems: &[Problem],
    g: usize,
    params: &SamplingParams,
    limits: EpisodeLimits,
) -> EpisodeOutcome {
    let ids = ids(problems.len());
    let batch = GroupBatch {
        problems,
        ids: &ids,
        group_size: g,
    };
    let hook = &mut FixedWeights { policy, version: 3 };
    let episodes = Episodes {
        envs,
        limits,
        chat: None,
    };
    run_episodes(hook, tok, &episodes, batch, params)
        .unwrap()
        .unwrap()
}

const WIDE: EpisodeLimits = EpisodeLimits {
    max_turns: 8,
    max_tokens: 256,
};

#[test]
fn a_one_turn_episode_is_exactly_the_sample_of_a_one_turn_task() {
    let m = model();
    let policy = m.policy().unwrap();
    let probs = problems("addition:2", 6);
    let p = params(&m, 8, 5);
    let single = builtin("single", Arc::new(NumericVerifier)).unwrap();
    let episodes = run(&policy, &m.tokenizer, single.clone(), &probs, 4, &p, WIDE);
    // Today's sample: every prompt G times through the sampling loop, decoded and verified.
    let prompts: Vec<Vec<u32>> = probs
        .iter()
        .flat_map(|q| std::iter::repeat_n(m.tokenizer.encode(&q.prompt).unwrap(), 4))
        .collect();
    let hook = &mut FixedWeights {
        policy: &policy,
        version: 3,
    };
    let completions = policy::sample(&prompts, &p, m.tokenizer.pad_id(), hook)
        .unwrap()
        .unwrap();
    let groups: Vec<RolloutGroup> = probs
        .iter()
        .zip(completions.chunks(4))
        .enumerate()
        .map(|(i, (q, cs))| RolloutGroup {
            group_id: format!("g{i}"),
            problem_id: q.id.clone(),
            prompt_tokens: prompts[i * 4].clone(),
            samples: cs
                .iter()
                .map(|c| {
                    let text = m.tokenizer.decode(&c.tokens).unwrap();
                    Sample {
                        reward: NumericVerifier.score(&text, &q.answer),
                        truncated: c.finish == policy::FinishReason::Length,
                        tokens: c.tokens.clone(),
                        logprobs: c.logprobs.clone(),
                        versions: c.versions.clone(),
                        mask: Vec::new(),
                        turns: 1,
                        text,
                    }
                })
                .collect(),
        })
        .collect();
    assert_eq!(episodes.groups, groups);
    assert!(episodes.dropped.is_empty());
    assert_eq!(episodes.stats.episodes, 24);
    assert_eq!(episodes.stats.turns, 24);
    assert!(groups
        .iter()
        .flat_map(|g| &g.samples)
        .any(|s| s.reward == 1.0));
}

#[test]
fn environment_tokens_are_masked_and_model_tokens_keep_the_sampling_invariant() {
    let m = model();
    let policy = m.policy().unwrap();
    let probs = problems("guess:3", 4);
    // Two-token turns: the default model writes digits, rarely an end of sequence early.
    let p = params(&m, 2, 7);
    let guess = builtin("guess", Arc::new(NumericVerifier)).unwrap();
    let limits = EpisodeLimits {
        max_turns: 4,
        max_tokens: 40,
    };
    let out = run(&policy, &m.tokenizer, guess.clone(), &probs, 4, &p, limits);
    assert_eq!(out.groups.len(), 4);
    let mut multi = 0;
    for g in &out.groups {
        g.validate(m.tokenizer.vocab_size()).unwrap();
        assert_eq!(
            m.tokenizer.decode(&g.prompt_tokens).unwrap(),
            problems_prompt(&probs, g)
        );
        for s in &g.samples {
            assert!(s.turns >= 1 && s.turns <= 4);
            assert!(s.tokens.len() <= 40);
            assert_eq!(s.logprobs.len(), s.model_tokens());
            assert!(s.versions.iter().all(|&v| v == 3));
            if s.turns > 1 {
                multi += 1;
                // The environment's answers are exactly the masked tokens.
                let env: Vec<u32> = (0..s.tokens.len())
                    .filter(|&k| !s.is_model(k))
                    .map(|k| s.tokens[k])
                    .collect();
                let text = m.tokenizer.decode(&env).unwrap();
                assert!(
                    text.split(':')
                        .filter(|t| !t.is_empty())
                        .all(|t| [" hi", " lo", " ?"].contains(&t)),
                    "environment tokens {text:?}"
                );
            }
            if s.reward == 1.0 {
                assert!(s.text.ends_with(&answer_of(&probs, g)), "{s:?}");
            } else {
                assert!(
                    s.turns == 4 || s.truncated,
                    "an unsolved game ran out: {s:?}"
                );
            }
            // Sampled log-probs equal teacher-forced ones across turns and re-joins.
            let seq: Vec<u32> = g.prompt_tokens.iter().chain(&s.tokens).copied().collect();
            let scored = policy::score_sequences(&policy, &[seq], m.tokenizer.pad_id(), 1.0)
                .unwrap()
                .remove(0);
            let at = g.prompt_tokens.len() - 1;
            let model_lp: Vec<f32> = (0..s.tokens.len())
                .filter(|&k| s.is_model(k))
                .map(|k| scored[at + k])
                .collect();
            for (a, b) in model_lp.iter().zip(&s.logprobs) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }
    assert!(multi > 0, "some episodes take several turns");
}

fn problems_prompt(probs: &[Problem], g: &RolloutGroup) -> String {
    probs
        .iter()
        .find(|p| p.id == g.problem_id)
        .unwrap()
        .prompt
        .clone()
}

fn answer_of(probs: &[Problem], g: &RolloutGroup) -> String {
    probs
        .iter()
        .find(|p| p.id == g.problem_id)
        .unwrap()
        .answer
        .clone()
}

#[test]
fn caps_end_episodes_and_a_capped_episode_is_truncated() {
    let m = model();
    let policy = m.policy().unwrap();
    let probs = problems("guess:7", 3);
    let p = params(&m, 3, 1);
    let guess = builtin("guess", Arc::new(NumericVerifier)).unwrap();
    let turns = EpisodeLimits {
        max_turns: 2,
        max_tokens: 1000,
    };
    let out = run(&policy, &m.tokenizer, guess.clone(), &probs, 4, &p, turns);
    assert!(out
        .groups
        .iter()
        .flat_map(|g| &g.samples)
        .all(|s| s.turns <= 2));
    let tokens = EpisodeLimits {
        max_turns: 100,
        max_tokens: 5,
    };
    let out = run(&policy, &m.tokenizer, guess.clone(), &probs, 4, &p, tokens);
    for s in out.groups.iter().flat_map(|g| &g.samples) {
        assert!(s.tokens.len() <= 5);
        if s.reward == 0.0 {
            assert!(
                s.truncated,
                "an unsolved game cut at 5 tokens is truncated: {s:?}"
            );
        }
    }
}

/// An environment scripted by a closure over (problem prompt, turn index).
struct Scripted<F> {
    prompt: String,
    turn: usize,
    remote: bool,
    script: Arc<F>,
}

impl<F> Environment for Scripted<F>
where
    F: Fn(&str, usize) -> Result<EnvStep, EnvError> + Send + Sync,
{
    fn reset(&mut self, problem: &Problem, _seed: u64) -> Result<String, EnvError> {
        self.prompt = problem.prompt.clone();
        Ok(problem.prompt.clone())
    }
    fn step(&mut self, _action: &str) -> Result<EnvStep, EnvError> {
        self.turn += 1;
        (self.script)(&self.prompt, self.turn)
    }
    fn is_remote(&self) -> bool {
        self.remote
    }
}

struct ScriptedEnvs<F> {
    remote: bool,
    script: Arc<F>,
}

impl<F> EnvFactory for ScriptedEnvs<F>
where
    F: Fn(&str, usize) -> Result<EnvStep, EnvError> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        "scripted"
    }
    fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(Scripted {
            prompt: String::new(),
            turn: 0,
            remote: self.remote,
            script: self.script.clone(),
        }))
    }
}

fn answer(observation: &str, reward: f32, done: bool) -> Result<EnvStep, EnvError> {
    Ok(EnvStep {
        observation: observation.into(),
        reward,
        done,
    })
}

#[test]
fn a_failing_environment_drops_its_group_with_the_reason_and_nothing_else() {
    let m = model();
    let policy = m.policy().unwrap();
    let probs = problems("addition:2", 3);
    let bad_prompt = probs[1].prompt.clone();
    for remote in [false, true] {
        let bad = bad_prompt.clone();
        let envs = ScriptedEnvs {
            remote,
            script: Arc::new(move |prompt: &str, turn: usize| {
                if prompt == bad && turn == 2 {
                    Err(EnvError::Timeout(50))
                } else if turn == 3 {
                    answer("", f32::NAN, true)
                } else {
                    answer(";", 0.5, turn == 2)
                }
            }),
        };
        let p = params(&m, 3, 2);
        let out = run(&policy, &m.tokenizer, Arc::new(envs), &probs, 3, &p, WIDE);
        assert_eq!(out.dropped.len(), 1, "remote {remote}");
        assert_eq!(out.dropped[0].problem_id, probs[1].id);
        assert_eq!(out.dropped[0].error.reason(), "env_timeout");
        assert_eq!(out.groups.len(), 2);
        for s in out.groups.iter().flat_map(|g| &g.samples) {
            assert_eq!(s.turns, 2);
            assert_eq!(s.reward, 1.0, "two steps of 0.5");
            assert_eq!(
                s.mask.iter().filter(|&&m| !m).count(),
                1,
                "one ';' from the environment"
            );
        }
    }
    // A non-finite reward is garbage, never a reward.
    let envs = ScriptedEnvs {
        remote: false,
        script: Arc::new(|_: &str, _| answer("", f32::INFINITY, true)),
    };
    let out = run(
        &policy,
        &m.tokenizer,
        Arc::new(envs),
        &probs,
        2,
        &params(&m, 3, 2),
        WIDE,
    );
    assert_eq!(out.dropped.len(), 3);
    assert!(out
        .dropped
        .iter()
        .all(|d| d.error.reason() == "env_invalid"));
}

#[test]
fn rows_keep_decoding_while_a_remote_environment_answers() {
    let m = model();
    let policy = m.policy().unwrap();
    let probs = problems("addition:2", 2);
    let slow_prompt = probs[0].prompt.clone();
    // Decode steps taken so far; the slow environment answers only once the other episodes
    // have been decoded for 6 more steps (or gives up after 20 s, failing the test).
    let steps = Arc::new(AtomicUsize::new(0));
    let seen = steps.clone();
    let envs = ScriptedEnvs {
        remote: true,
        script: Arc::new(move |prompt: &str, turn: usize| {
            if prompt == slow_prompt && turn == 1 {
                let start = seen.load(Ordering::SeqCst);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while seen.load(Ordering::SeqCst) < start + 6 {
                    if std::time::Instant::now() > deadline {
                        return Err(EnvError::Unavailable("nothing decoded meanwhile".into()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            answer(";", 0.0, turn == 4)
        }),
    };
    struct Counting<'a> {
        policy: &'a Policy,
        steps: Arc<AtomicUsize>,
    }
    impl StepHook for Counting<'_> {
        fn weights(&mut self) -> Option<(&Policy, u64)> {
            self.steps.fetch_add(1, Ordering::SeqCst);
            Some((self.policy, 0))
        }
    }
    let hook = &mut Counting {
        policy: &policy,
        steps,
    };
    let ids = ids(2);
    let batch = GroupBatch {
        problems: &probs,
        ids: &ids,
        group_size: 2,
    };
    let p = params(&m, 2, 4);
    let episodes = Episodes {
        envs: Arc::new(envs),
        limits: WIDE,
        chat: None,
    };
    let out = run_episodes(hook, &m.tokenizer, &episodes, batch, &p)
        .unwrap()
        .unwrap();
    assert!(out.dropped.is_empty(), "{:?}", out.dropped);
    assert_eq!(out.groups.len(), 2);
    assert!(out.stats.env_latencies.len() >= 2 * 2 * 5);
}

#[test]
fn episodes_in_a_chat_template_are_its_rendering_of_the_conversation() {
    let m = model();
    let policy = m.policy().unwrap();
    // Markers of plain characters, so that the character-level default model can take them.
    let template = policy::ChatTemplate::new(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token if m.role == 'assistant' else '' }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
        None,
        Some("</s>".into()),
    )
    .unwrap();
    let tok = m.tokenizer.clone().with_chat_template(template.clone());
    let probs = problems("guess:3", 3);
    let episodes = Episodes {
        envs: builtin("guess", Arc::new(NumericVerifier)).unwrap(),
        limits: EpisodeLimits {
            max_turns: 3,
            max_tokens: 200,
        },
        chat: chat::ChatFormat::resolve(chat::AUTO, Some("Find it."), &tok).unwrap(),
    };
    let ids = ids(probs.len());
    let batch = GroupBatch {
        problems: &probs,
        ids: &ids,
        group_size: 4,
    };
    let hook = &mut FixedWeights {
        policy: &policy,
        version: 1,
    };
    let p = params(&m, 3, 11);
    let out = run_episodes(hook, &tok, &episodes, batch, &p)
        .unwrap()
        .unwrap();
    assert!(out.dropped.is_empty(), "{:?}", out.dropped);
    let text = |ids: &[u32]| tok.decode_with_special(ids).unwrap();
    let (mut multi, mut cut) = (0, 0);
    for (g, problem) in out.groups.iter().zip(&probs) {
        g.validate(tok.vocab_size()).unwrap();
        assert_eq!(
            text(&g.prompt_tokens),
            format!("<system>Find it.\n<user>{}\n<assistant>", problem.prompt)
        );
        for s in &g.samples {
            // Split the sample into its model turns and the environment's suffixes, and
            // rebuild the conversation from them.
            let mask = if s.mask.is_empty() {
                vec![true; s.tokens.len()]
            } else {
                s.mask.clone()
            };
            let mut messages = vec![
                policy::Message::system("Find it."),
                policy::Message::user(problem.prompt.clone()),
            ];
            let mut k = 0;
            while k < s.tokens.len() {
                let run = mask[k..].iter().take_while(|&&m| m == mask[k]).count();
                let segment = text(&s.tokens[k..k + run]);
                if mask[k] {
                    let content = segment.strip_suffix("</s>").unwrap_or(&segment);
                    messages.push(policy::Message::assistant(content));
                } else {
                    cut += segment.starts_with("</s>") as usize;
                    let reply = segment
                        .trim_start_matches("</s>")
                        .strip_prefix("\n<user>")
                        .and_then(|r| r.strip_suffix("\n<assistant>"))
                        .unwrap_or_else(|| panic!("environment suffix {segment:?}"));
                    messages.push(policy::Message::user(reply));
                }
                k += run;
            }
            multi += (s.turns > 1) as usize;
            assert_eq!(s.turns as usize, messages.len() / 2, "{messages:?}");
            assert_eq!(s.logprobs.len(), mask.iter().filter(|&&m| m).count());
            // The whole episode is the template's rendering of that conversation, cut where
            // the model's last turn ended.
            let whole = template.render(&messages, false).unwrap();
            let seen = text(&[g.prompt_tokens.clone(), s.tokens.clone()].concat());
            assert!(whole.starts_with(&seen), "{seen:?}\nvs\n{whole:?}");
            assert!(
                whole.len() - seen.len() <= "</s>\n".len(),
                "{seen:?} vs {whole:?}"
            );
        }
    }
    assert!(multi > 0, "no episode took a second turn");
    assert!(cut > 0, "no turn was cut off before its stop token");
}
