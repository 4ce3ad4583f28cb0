//! Samplers side by side on the same held-out problems: accuracy, pass@k, tokens generated
//! and wall time per sampler (what `oxrl eval` prints).
//!
//! Samplers that need N samples per prompt (`best-of*:N`, `majority:N`, `pass:N`) share one
//! set of draws per N, so they differ only in how they choose; each reports the tokens and
//! time those draws cost (what it would cost alone) plus its own selection time. Greedy and
//! sampled draws come from `crate::eval`, the code training's evaluation runs, so greedy here
//! is exactly training's greedy pass@1. `per-prompt:N,STEPS` changes the weights, so it runs
//! only with a [`TestTimeLearner`] lent by the caller (`per_prompt.rs`); `best-of-rm:N` ranks
//! the shared draws by a [`SampleScorer`] (a reward model) lent by the caller.

use super::beam::BeamParams;
use super::best_of::{self, Selection};
use super::passk::mean_pass_at_k;
use super::per_prompt::TestTimeLearner;
use super::power::PowerParams;
use super::sampler::Sampler;
use super::scorer::SampleScorer;
use super::vote::majority_vote;
use crate::eval::{held_out_problems, Drawn, Draws, EvalSet};
use policy::{Policy, SamplingParams, Tokenizer};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tasks::{Problem, ProblemSource, Verifier};

/// Options shared by the samplers of one evaluation.
#[derive(Debug, Clone)]
pub struct TtcOptions {
    /// How `sample`, `best-of*`, `majority` and `pass` draw (temperature, top-p, top-k, min-p);
    /// its `max_new_tokens`, `stop_tokens` and `seed` apply to every sampler.
    pub sampling: SamplingParams,
    /// The k of pass@k, each reported where k <= the samples per problem; empty means 1 and N.
    pub ks: Vec<usize>,
    /// Power sampling's alpha, block and MCMC steps (its length budget, stop tokens and seed
    /// are taken from `sampling`).
    pub power: PowerParams,
    /// Sequences decoded together (prompts x samples per prompt).
    pub batch_rows: usize,
}

/// One prompt with the answer a sampler chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub completion: String,
    pub reward: f32,
}

/// What one sampler scored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplerReport {
    /// The sampler's spec, e.g. `best-of:16`.
    pub sampler: String,
    /// The problem source, e.g. `addition-2`.
    pub task: String,
    /// Problems evaluated.
    pub n: usize,
    /// Samples (or chains) drawn per problem.
    pub samples_per_problem: usize,
    /// Mean over problems of the chosen answer's reward; for `pass:N` and `power:N`, of the
    /// fraction of samples that are correct (pass@1).
    pub accuracy: f64,
    /// True for the oracle (`best-of-oracle`): it needs the reference answer to choose.
    pub upper_bound: bool,
    /// Unbiased pass@k from the samples, for each asked k <= samples per problem.
    pub pass_at_k: BTreeMap<usize, f64>,
    /// Tokens generated in all (every sample, beam extension and MCMC proposal).
    pub tokens: usize,
    /// `tokens / n`.
    pub tokens_per_problem: f64,
    /// Seconds the sampler took (for shared draws, the draws' time plus its own).
    pub wall_s: f64,
    /// Power sampling only: the fraction of MCMC proposals accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance_rate: Option<f64>,
    /// The first few problems with the chosen answers.
    pub examples: Vec<Example>,
}

/// A sampler's result on one problem.
struct Outcome {
    /// Reward of the chosen answer (or fraction correct).
    score: f64,
    samples: usize,
    correct: usize,
    shown: (String, f32),
}

/// Runs every sampler on the first `n` held-out problems of `source` (all of them if it has
/// fewer), in the order given.
pub fn evaluate(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
    n: usize,
    samplers: &[Sampler],
    opts: &TtcOptions,
) -> policy::Result<Vec<SamplerReport>> {
    let lent = Lent::default();
    evaluate_with_progress(policy, tok, source, n, samplers, opts, lent, &|_, _, _| {})
}

/// What the caller lends the samplers that cannot run on the policy alone.
#[derive(Default)]
pub struct Lent<'a> {
    /// What `per-prompt:N,STEPS` trains (its starting weights should be the policy's).
    pub learner: Option<&'a mut dyn TestTimeLearner>,
    /// What `best-of-rm:N` ranks samples by (a reward model of the same tokenizer).
    pub scorer: Option<&'a dyn SampleScorer>,
}

/// [`evaluate`], calling `progress(sampler, problems done, problems)` as batches finish
/// (once at the end for a sampler whose draws are shared with an earlier one). A sampler
/// that needs what `lent` does not hold is an error before any sampler runs.
#[allow(clippy::too_many_arguments)] // evaluate's arguments, what is lent and the progress
pub fn evaluate_with_progress(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
    n: usize,
    samplers: &[Sampler],
    opts: &TtcOptions,
    lent: Lent<'_>,
    progress: &dyn Fn(&str, usize, usize),
) -> policy::Result<Vec<SamplerReport>> {
    let Lent {
        mut learner,
        scorer,
    } = lent;
    if let Some(s) = samplers.iter().find(|s| s.needs_learner()) {
        if learner.is_none() {
            return Err(policy::PolicyError::Input(format!(
                "sampler {s} trains the model and needs a learner to evaluate it"
            )));
        }
    }
    if let Some(s) = samplers.iter().find(|s| s.needs_scorer()) {
        if scorer.is_none() {
            return Err(policy::PolicyError::Input(format!(
                "sampler {s} ranks samples by a reward model and needs one (oxrl eval --rm DIR)"
            )));
        }
    }
    let problems = held_out_problems(source, n);
    let n = problems.len();
    let running = std::cell::RefCell::new(String::new());
    let on_problems = |done: usize| progress(&running.borrow(), done, n);
    let verifier = source.verifier();
    // `oxrl eval`'s samplers compare one-turn answers, asked in the model's chat template
    // when it has one.
    let episodes = crate::episode::Episodes {
        chat: crate::ChatFormat::resolve(crate::episode::chat::AUTO, None, tok)?,
        ..crate::episode::Episodes::single(verifier.clone())
    };
    let set = EvalSet {
        policy,
        tok,
        problems: &problems,
        verifier: &verifier,
        episodes: &episodes,
        batch_rows: opts.batch_rows,
        on_problems: &on_problems,
    };
    let mut shared: HashMap<usize, Draws> = HashMap::new();
    let mut reports = Vec::with_capacity(samplers.len());
    for &sampler in samplers {
        *running.borrow_mut() = sampler.to_string();
        on_problems(0);
        let run = run_sampler(
            &set,
            sampler,
            opts,
            &mut shared,
            learner.as_deref_mut(),
            scorer,
        )?;
        let report = report(sampler, source.name(), &problems, run, opts);
        on_problems(n);
        tracing::info!(
            sampler = %report.sampler,
            accuracy = report.accuracy,
            tokens = report.tokens,
            wall_s = report.wall_s,
            "sampler evaluated"
        );
        reports.push(report);
    }
    Ok(reports)
}

/// What one sampler did on every problem.
struct SamplerRun {
    outcomes: Vec<Outcome>,
    tokens: usize,
    wall_s: f64,
    acceptance_rate: Option<f64>,
}

impl SamplerRun {
    /// Sample `i` of each problem's draws as its answer.
    fn choosing(d: &Draws, i: usize) -> Self {
        SamplerRun {
            outcomes: d.per_problem.iter().map(|s| choose(s, i)).collect(),
            tokens: d.tokens,
            wall_s: d.wall_s,
            acceptance_rate: None,
        }
    }
}

/// Draws what `sampler` needs (or reuses the N samples per problem in `shared`) and lets it
/// choose its answers.
fn run_sampler<'l>(
    set: &EvalSet,
    sampler: Sampler,
    opts: &TtcOptions,
    shared: &mut HashMap<usize, Draws>,
    learner: Option<&mut (dyn TestTimeLearner + 'l)>,
    scorer: Option<&dyn SampleScorer>,
) -> policy::Result<SamplerRun> {
    match sampler {
        Sampler::Greedy | Sampler::Sample => {
            let mut params = opts.sampling.clone();
            if sampler == Sampler::Greedy {
                params.temperature = 0.0;
            }
            Ok(SamplerRun::choosing(&set.sample(1, &params)?, 0))
        }
        Sampler::Beam {
            width,
            length_normalised,
        } => {
            let d = set.beam(&BeamParams {
                width,
                length_normalised,
                max_new_tokens: opts.sampling.max_new_tokens,
                stop_tokens: opts.sampling.stop_tokens.clone(),
            })?;
            Ok(SamplerRun::choosing(&d, 0))
        }
        Sampler::BestOf { n: k, .. }
        | Sampler::BestOfRm { n: k }
        | Sampler::Majority { n: k }
        | Sampler::PassAtK { n: k } => {
            let d = match shared.entry(k) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(set.sample(k, &opts.sampling)?),
            };
            let selecting = Instant::now();
            let by_logprob = matches!(
                sampler,
                Sampler::BestOf { selection, .. } if selection != Selection::Oracle
            );
            if by_logprob {
                set.model_logprobs(d)?;
            }
            if sampler.needs_scorer() {
                let scorer = scorer.expect("checked before any sampler ran");
                let outcomes = set
                    .problems
                    .iter()
                    .zip(&d.per_problem)
                    .map(|(p, samples)| best_by_scorer(set, scorer, p, samples))
                    .collect::<policy::Result<_>>()?;
                return Ok(SamplerRun {
                    outcomes,
                    tokens: d.tokens,
                    wall_s: d.wall_s + selecting.elapsed().as_secs_f64(),
                    acceptance_rate: None,
                });
            }
            let outcomes = d
                .per_problem
                .iter()
                .map(|samples| select(sampler, samples, set.verifier.as_ref()))
                .collect();
            Ok(SamplerRun {
                outcomes,
                tokens: d.tokens,
                wall_s: d.wall_s + selecting.elapsed().as_secs_f64(),
                acceptance_rate: None,
            })
        }
        Sampler::Power { chains } => {
            let (d, rate) = set.power(
                chains,
                &PowerParams {
                    max_new_tokens: opts.sampling.max_new_tokens,
                    stop_tokens: opts.sampling.stop_tokens.clone(),
                    seed: opts.sampling.seed,
                    ..opts.power.clone()
                },
            )?;
            Ok(SamplerRun {
                outcomes: d.per_problem.iter().map(|s| fraction_correct(s)).collect(),
                tokens: d.tokens,
                wall_s: d.wall_s,
                acceptance_rate: Some(rate),
            })
        }
        Sampler::PerPrompt { n, steps } => {
            let learner = learner.expect("checked before any sampler ran");
            let d = set.per_prompt(learner, n, steps, &opts.sampling)?;
            Ok(SamplerRun::choosing(&d, 0))
        }
    }
}

fn report(
    sampler: Sampler,
    task: &str,
    problems: &[Problem],
    run: SamplerRun,
    opts: &TtcOptions,
) -> SamplerReport {
    let SamplerRun {
        outcomes,
        tokens,
        wall_s,
        acceptance_rate,
    } = run;
    let n = problems.len();
    let per = sampler.samples_per_problem();
    let ks: Vec<usize> = if opts.ks.is_empty() {
        vec![1, per]
    } else {
        opts.ks.clone()
    };
    let counts: Vec<(usize, usize)> = outcomes.iter().map(|o| (o.samples, o.correct)).collect();
    let pass_at_k = ks
        .into_iter()
        .filter(|&k| k >= 1 && k <= per)
        .filter_map(|k| Some((k, mean_pass_at_k(&counts, k)?)))
        .collect();
    let examples = problems
        .iter()
        .zip(&outcomes)
        .take(5)
        .map(|(p, o)| Example {
            prompt: p.prompt.clone(),
            completion: o.shown.0.clone(),
            reward: o.shown.1,
        })
        .collect();
    SamplerReport {
        sampler: sampler.to_string(),
        task: task.to_string(),
        n,
        samples_per_problem: per,
        accuracy: outcomes.iter().map(|o| o.score).sum::<f64>() / n.max(1) as f64,
        upper_bound: sampler.is_oracle(),
        pass_at_k,
        tokens,
        tokens_per_problem: tokens as f64 / n.max(1) as f64,
        wall_s,
        acceptance_rate,
        examples,
    }
}

/// The outcome of returning sample `i` of `samples` as the answer.
fn choose(samples: &[Drawn], i: usize) -> Outcome {
    let correct = samples.iter().filter(|s| s.reward > 0.5).count();
    let shown = samples
        .get(i)
        .map(|s| (s.text.clone(), s.reward))
        .unwrap_or_default();
    Outcome {
        score: shown.1 as f64,
        samples: samples.len(),
        correct,
        shown,
    }
}

/// The sample of `p`'s draws that `scorer` scores highest (ties: the first).
fn best_by_scorer(
    set: &EvalSet,
    scorer: &dyn SampleScorer,
    p: &Problem,
    samples: &[Drawn],
) -> policy::Result<Outcome> {
    let completions: Vec<Vec<u32>> = samples.iter().map(|s| s.tokens.clone()).collect();
    let scores = scorer.score(&set.prompt_tokens(p)?, &completions)?;
    let scores: Vec<f64> = scores.into_iter().map(f64::from).collect();
    Ok(choose(samples, best_of::best_index(&scores).unwrap_or(0)))
}

/// How `best-of*`, `majority` and `pass` turn N samples into an outcome.
fn select(sampler: Sampler, samples: &[Drawn], verifier: &dyn Verifier) -> Outcome {
    let rewards: Vec<f32> = samples.iter().map(|s| s.reward).collect();
    match sampler {
        Sampler::BestOf { selection, .. } => {
            let logprobs: Vec<Vec<f32>> = samples.iter().map(|s| s.logprobs.clone()).collect();
            choose(
                samples,
                best_of::select(&logprobs, &rewards, selection).unwrap_or(0),
            )
        }
        Sampler::Majority { .. } => {
            let answers: Vec<Option<String>> =
                samples.iter().map(|s| verifier.extract(&s.text)).collect();
            match majority_vote(&answers) {
                Some(vote) => choose(samples, vote.first),
                // Nobody answered: the vote is wrong, whatever sample 0 says.
                None => Outcome {
                    score: 0.0,
                    ..choose(samples, 0)
                },
            }
        }
        _ => fraction_correct(samples),
    }
}

/// The outcome of N samples all counted: their fraction correct (pass@1).
fn fraction_correct(samples: &[Drawn]) -> Outcome {
    let mut o = choose(samples, 0);
    o.score = o.correct as f64 / samples.len().max(1) as f64;
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks::NumericVerifier;

    fn drawn(text: &str, logprobs: &[f32], reward: f32) -> Drawn {
        Drawn {
            text: text.into(),
            tokens: vec![5; logprobs.len()],
            logprobs: logprobs.to_vec(),
            reward,
        }
    }

    #[test]
    fn each_sampler_chooses_from_the_same_draws() {
        let samples = [
            drawn("41", &[-0.1, -0.1], 0.0),
            drawn("42", &[-2.0, -0.1], 1.0),
            drawn("41", &[-0.5, -0.5], 0.0),
            drawn("x", &[-0.01], 0.0),
        ];
        let v = NumericVerifier;
        let run = |s: &str| select(s.parse().unwrap(), &samples, &v);
        // Highest total log-prob: "x" (-0.01); the oracle finds the correct one.
        assert_eq!(run("best-of:4").shown.0, "x");
        assert_eq!(run("best-of-oracle:4").score, 1.0);
        // "41" has two votes ("x" has no number and does not vote).
        let m = run("majority:4");
        assert_eq!((m.shown.0.as_str(), m.score), ("41", 0.0));
        let p = run("pass:4");
        assert_eq!((p.score, p.correct, p.samples), (0.25, 1, 4));
        // Nobody answers: the vote is wrong.
        let silent = [drawn("?", &[-1.0], 0.0), drawn("!", &[-1.0], 0.0)];
        assert_eq!(
            select("majority:2".parse().unwrap(), &silent, &v).score,
            0.0
        );
    }

    /// Evaluates greedy then `sampler` with nothing lent: the error, after checking that
    /// greedy never started.
    fn refused_with_nothing_lent(sampler: &str) -> String {
        let m = policy::default_model::embedded().unwrap();
        let source = tasks::from_spec("addition:2", 0, &tasks::VerifierRegistry::new()).unwrap();
        let samplers = ["greedy".parse().unwrap(), sampler.parse().unwrap()];
        let ran = std::cell::Cell::new(false);
        let err = evaluate_with_progress(
            &m.policy().unwrap(),
            &m.tokenizer,
            source.as_ref(),
            2,
            &samplers,
            &tiny_opts(),
            Lent::default(),
            &|_, _, _| ran.set(true),
        )
        .err()
        .unwrap();
        assert!(!ran.get(), "greedy ran before the refusal");
        err.to_string()
    }

    #[test]
    fn per_prompt_without_a_learner_is_refused_before_anything_runs() {
        let err = refused_with_nothing_lent("per-prompt:4,1");
        assert!(err.contains("per-prompt:4,1 trains the model"), "{err}");
    }

    /// A reward model that is a known function: the sum of the completion's token ids. It
    /// records each prompt's completions so the test can compute the argmax itself.
    struct SumOfIds(std::cell::RefCell<Vec<Vec<Vec<u32>>>>);

    impl SampleScorer for SumOfIds {
        fn score(&self, prompt: &[u32], completions: &[Vec<u32>]) -> policy::Result<Vec<f32>> {
            assert!(!prompt.is_empty());
            self.0.borrow_mut().push(completions.to_vec());
            Ok(completions
                .iter()
                .map(|c| c.iter().map(|&t| t as f32).sum())
                .collect())
        }
    }

    fn tiny_opts() -> TtcOptions {
        TtcOptions {
            sampling: SamplingParams {
                max_new_tokens: 6,
                stop_tokens: vec![2],
                seed: 5,
                ..SamplingParams::default()
            },
            ks: Vec::new(),
            power: PowerParams::default(),
            batch_rows: 16,
        }
    }

    #[test]
    fn best_of_rm_picks_the_scorers_argmax_from_the_draws_best_of_shares() {
        let m = policy::default_model::embedded().unwrap();
        let source = tasks::from_spec("addition:2", 0, &tasks::VerifierRegistry::new()).unwrap();
        let samplers: Vec<Sampler> = ["best-of:4", "best-of-rm:4", "pass:4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let scorer = SumOfIds(Default::default());
        let reports = evaluate_with_progress(
            &m.policy().unwrap(),
            &m.tokenizer,
            source.as_ref(),
            3,
            &samplers,
            &tiny_opts(),
            Lent {
                learner: None,
                scorer: Some(&scorer),
            },
            &|_, _, _| {},
        )
        .unwrap();
        let (best_of, rm, pass) = (&reports[0], &reports[1], &reports[2]);
        assert_eq!(rm.sampler, "best-of-rm:4");
        // One set of draws: the same tokens, and the scorer saw 4 completions per problem.
        assert_eq!((rm.tokens, rm.tokens), (best_of.tokens, pass.tokens));
        let seen = scorer.0.borrow();
        assert_eq!(seen.len(), 3);
        for (completions, example) in seen.iter().zip(&rm.examples) {
            assert_eq!(completions.len(), 4);
            let sums: Vec<u32> = completions.iter().map(|c| c.iter().sum()).collect();
            let best = (0..4).fold(0, |b, i| if sums[i] > sums[b] { i } else { b });
            let text = m.tokenizer.decode(&completions[best]).unwrap();
            assert_eq!(example.completion, text, "sums {sums:?}");
        }
        // The samples differ, so the argmax is not trivially the first.
        assert!(seen.iter().any(|c| c.windows(2).any(|w| w[0] != w[1])));
    }

    #[test]
    fn best_of_rm_without_a_scorer_is_refused_before_anything_runs() {
        let err = refused_with_nothing_lent("best-of-rm:4");
        assert!(
            err.contains("best-of-rm:4 ranks samples by a reward model"),
            "{err}"
        );
    }
}
