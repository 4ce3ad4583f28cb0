//! The episode engine's [`RowDriver`]: which episodes join the batch before each step (their
//! environment has answered), the next token of each row, and what the environments are
//! told when a turn ends.

use super::chat::{ChatFormat, Conversation};
use super::workers::{self, Answer, Call, Done, Workers};
use super::{EpisodeLimits, EpisodeStats};
use crate::group::Sample;
use policy::sampling::sample_token;
use policy::{RowDriver, SamplingParams, Tokenizer};
use rand::SeedableRng;
use std::sync::Arc;
use std::time::Duration;
use tasks::{EnvError, EnvStep, Environment, Problem};

/// How long an idle decoder waits for a remote environment before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// One episode's state.
pub(super) struct Episode {
    group: usize,
    problem: Problem,
    seed: u64,
    /// Its environment, or why none could be made; `None` while a worker holds it.
    env: Option<Box<dyn Environment>>,
    made: Option<EnvError>,
    remote: bool,
    /// The conversation as the model's chat template lays it out (or plain text).
    conversation: Conversation,
    /// The first observation's tokens.
    first: Vec<u32>,
    /// Everything the model sees: the first observation and every token since.
    context: Vec<u32>,
    tokens: Vec<u32>,
    mask: Vec<bool>,
    logprobs: Vec<f32>,
    versions: Vec<u64>,
    /// The turn being decoded.
    turn: Vec<u32>,
    turns: u32,
    reward: f32,
    truncated: bool,
    finished: bool,
    rng: rand::rngs::StdRng,
}

impl Episode {
    /// Episode `i` of a batch on `problem`, its environment as the factory made it.
    pub fn new(
        group: usize,
        problem: Problem,
        seed: u64,
        env: Result<Box<dyn Environment>, EnvError>,
        params: &SamplingParams,
        chat: Option<Arc<ChatFormat>>,
        i: u64,
    ) -> Episode {
        let (env, made) = match env {
            Ok(env) => (Some(env), None),
            Err(e) => (None, Some(e)),
        };
        Episode {
            group,
            problem,
            seed,
            remote: env.as_ref().is_some_and(|e| e.is_remote()),
            env,
            made,
            conversation: Conversation::new(chat),
            first: Vec::new(),
            context: Vec::new(),
            tokens: Vec::new(),
            mask: Vec::new(),
            logprobs: Vec::new(),
            versions: Vec::new(),
            turn: Vec::new(),
            turns: 0,
            reward: 0.0,
            truncated: false,
            finished: false,
            rng: rand::rngs::StdRng::seed_from_u64(policy::row_seed(params.seed, i)),
        }
    }

    pub fn is_remote(&self) -> bool {
        self.remote
    }

    pub fn first_observation(&self) -> &[u32] {
        &self.first
    }

    /// The finished episode as a sample after a prompt of `prompt_len` tokens (the rest of
    /// its first observation becomes environment tokens).
    pub fn into_sample(self, prompt_len: usize, tok: &Tokenizer) -> policy::Result<Sample> {
        let extra = &self.first[prompt_len..];
        let tokens: Vec<u32> = extra.iter().chain(&self.tokens).copied().collect();
        let mut mask: Vec<bool> = std::iter::repeat_n(false, extra.len())
            .chain(self.mask)
            .collect();
        if mask.iter().all(|&m| m) {
            mask.clear();
        }
        Ok(Sample {
            text: tok.decode(&tokens)?,
            tokens,
            logprobs: self.logprobs,
            versions: self.versions,
            mask,
            turns: self.turns.max(1),
            reward: self.reward,
            truncated: self.truncated,
        })
    }
}

/// The driver: episodes, what each group's failure was, and the calls in flight.
pub(super) struct Driver<'a> {
    tok: &'a Tokenizer,
    params: &'a SamplingParams,
    limits: EpisodeLimits,
    episodes: Vec<Episode>,
    failures: Vec<Option<EnvError>>,
    pool: Option<Workers>,
    started: bool,
    /// Episodes whose turn ended since the last look.
    ended: Vec<usize>,
    /// Episodes ready to join the batch, with their contexts.
    ready: Vec<(usize, Vec<u32>)>,
    outstanding: usize,
    stats: EpisodeStats,
}

impl<'a> Driver<'a> {
    pub fn new(
        tok: &'a Tokenizer,
        params: &'a SamplingParams,
        limits: EpisodeLimits,
        episodes: Vec<Episode>,
        groups: usize,
        pool: Option<Workers>,
    ) -> Driver<'a> {
        Driver {
            tok,
            params,
            limits,
            episodes,
            failures: vec![None; groups],
            pool,
            started: false,
            ended: Vec::new(),
            ready: Vec::new(),
            outstanding: 0,
            stats: EpisodeStats::default(),
        }
    }

    /// The episodes, each group's failure, and the statistics.
    pub fn finish(mut self) -> (Vec<Episode>, Vec<Option<EnvError>>, EpisodeStats) {
        self.stats.episodes = self.episodes.len();
        self.stats.turns = self.episodes.iter().map(|e| e.turns as u64).sum();
        (self.episodes, self.failures, self.stats)
    }

    /// Closes every environment still open (decoding was stopped).
    pub fn abandon(&mut self) {
        for e in 0..self.episodes.len() {
            self.close(e);
        }
    }

    /// Sends `call` to episode `e`'s environment: on a worker when it is remote, else now.
    fn dispatch(&mut self, e: usize, call: Call) {
        let Some(mut env) = self.episodes[e].env.take() else {
            return;
        };
        if let (true, Some(pool)) = (self.episodes[e].remote, &self.pool) {
            // A close answers nothing: counting it would leave the batch waiting forever for
            // an answer (an idle decoder keeps asking while any call is outstanding).
            if !matches!(call, Call::Close) {
                self.outstanding += 1;
            }
            pool.send(e, env, call);
            return;
        }
        if let Some((answer, seconds)) = workers::make(env.as_mut(), call) {
            self.apply(Done {
                episode: e,
                env,
                answer,
                seconds,
            });
        }
    }

    /// Ends episode `e` and releases its environment.
    fn close(&mut self, e: usize) {
        self.episodes[e].finished = true;
        if self.episodes[e].env.is_some() {
            self.dispatch(e, Call::Close);
        }
    }

    /// Drops episode `e`'s group for `error` (the first error a group meets is its reason).
    fn fail(&mut self, e: usize, error: EnvError) {
        let g = self.episodes[e].group;
        self.failures[g].get_or_insert(error);
        self.close(e);
    }

    /// What an environment answered episode `done.episode`.
    fn apply(&mut self, done: Done) {
        let e = done.episode;
        self.stats.env_latencies.push(done.seconds);
        self.episodes[e].env = Some(done.env);
        if self.failures[self.episodes[e].group].is_some() {
            self.close(e);
            return;
        }
        match done.answer {
            Answer::Reset(Ok(obs)) => self.reset(e, &obs),
            Answer::Step(Ok(step)) => self.stepped(e, step),
            Answer::Reset(Err(err)) | Answer::Step(Err(err)) => self.fail(e, err),
        }
    }

    fn reset(&mut self, e: usize, observation: &str) {
        let observation = match self.episodes[e].conversation.open(observation) {
            Ok(text) => text,
            Err(err) => return self.fail(e, err),
        };
        let first = match self.tok.encode(&observation) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => {
                return self.fail(e, EnvError::Invalid("an empty first observation".into()));
            }
            Err(err) => return self.tokenizer_failed(e, err),
        };
        let ep = &mut self.episodes[e];
        ep.context = first.clone();
        ep.first = first;
        self.ready.push((e, ep.context.clone()));
    }

    fn stepped(&mut self, e: usize, step: EnvStep) {
        if !step.reward.is_finite() {
            let why = format!("reward {} is not finite", step.reward);
            return self.fail(e, EnvError::Invalid(why));
        }
        self.episodes[e].reward += step.reward;
        let at_cap = self.episodes[e].turns >= self.limits.max_turns;
        if step.done || at_cap {
            return self.close(e);
        }
        let observation = match self.episodes[e].conversation.reply(&step.observation) {
            Ok(text) => text,
            Err(err) => return self.fail(e, err),
        };
        let obs = match self.tok.encode(&observation) {
            Ok(t) => t,
            Err(err) => return self.tokenizer_failed(e, err),
        };
        let ep = &mut self.episodes[e];
        if ep.tokens.len() + obs.len() >= self.limits.max_tokens {
            ep.truncated = true;
            return self.close(e);
        }
        ep.tokens.extend(&obs);
        ep.mask.extend(std::iter::repeat_n(false, obs.len()));
        ep.context.extend(&obs);
        self.ready.push((e, ep.context.clone()));
    }

    /// Text the tokenizer cannot take (an observation it cannot encode) is the
    /// environment's garbage: the group is dropped.
    fn tokenizer_failed(&mut self, e: usize, err: policy::PolicyError) {
        self.fail(e, EnvError::Invalid(err.to_string()));
    }

    /// Tells the environments about the turns that ended.
    fn turns_ended(&mut self) {
        for e in std::mem::take(&mut self.ended) {
            let ep = &mut self.episodes[e];
            ep.turns += 1;
            let turn = std::mem::take(&mut ep.turn);
            let said = self.tok.decode(&turn).and_then(|text| {
                self.record_turn(e, &turn)?;
                Ok(text)
            });
            match said {
                Ok(text) => self.dispatch(e, Call::Step(text)),
                Err(err) => self.tokenizer_failed(e, err),
            }
        }
    }

    /// Adds episode `e`'s model turn to its conversation: its text as the template will
    /// render it (special tokens written out), and the stop token's, if it ended with one.
    fn record_turn(&mut self, e: usize, turn: &[u32]) -> policy::Result<()> {
        if !self.episodes[e].conversation.templated() {
            return Ok(());
        }
        let stopped = turn
            .last()
            .is_some_and(|t| self.params.stop_tokens.contains(t));
        let (content, stop) = turn.split_at(turn.len() - stopped as usize);
        let content = self.tok.decode_with_special(content)?;
        let stop = self.tok.decode_with_special(stop)?;
        self.episodes[e].conversation.model_turn(&content, &stop);
        Ok(())
    }
}

impl RowDriver for Driver<'_> {
    fn arrivals(&mut self, idle: bool) -> Option<Vec<(usize, Vec<u32>)>> {
        if !self.started {
            self.started = true;
            for e in 0..self.episodes.len() {
                match self.episodes[e].made.take() {
                    Some(err) => self.fail(e, err),
                    None => {
                        let ep = &self.episodes[e];
                        let call = Call::Reset(ep.problem.clone(), ep.seed);
                        self.dispatch(e, call);
                    }
                }
            }
        }
        self.turns_ended();
        if let Some(pool) = self.pool.take() {
            while let Some(done) = pool.receive(None) {
                self.outstanding -= 1;
                self.apply(done);
            }
            if idle && self.ready.is_empty() && self.outstanding > 0 {
                if let Some(done) = pool.receive(Some(IDLE_WAIT)) {
                    self.outstanding -= 1;
                    self.apply(done);
                }
            }
            self.pool = Some(pool);
        }
        if !self.ready.is_empty() {
            return Some(std::mem::take(&mut self.ready));
        }
        (self.outstanding > 0 || !idle).then(Vec::new)
    }

    fn pick(&mut self, key: usize, logits: &[f32], version: u64) -> Option<u32> {
        let ep = &mut self.episodes[key];
        if ep.finished || self.failures[ep.group].is_some() {
            self.close(key);
            return None;
        }
        let (token, logprob) = sample_token(logits, self.params, &mut ep.rng);
        ep.tokens.push(token);
        ep.mask.push(true);
        ep.logprobs.push(logprob);
        ep.versions.push(version);
        ep.turn.push(token);
        ep.context.push(token);
        let stop = self.params.stop_tokens.contains(&token);
        let turn_full = ep.turn.len() >= self.params.max_new_tokens;
        let episode_full = ep.tokens.len() >= self.limits.max_tokens;
        if stop || turn_full || episode_full {
            ep.truncated |= !stop;
            self.ended.push(key);
            return None;
        }
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A remote environment that counts how often it was closed.
    struct Remote(Arc<AtomicUsize>);

    impl Environment for Remote {
        fn reset(&mut self, _: &Problem, _: u64) -> Result<String, EnvError> {
            Ok("1+1=".into())
        }
        fn step(&mut self, _: &str) -> Result<EnvStep, EnvError> {
            Err(EnvError::Timeout(1))
        }
        fn is_remote(&self) -> bool {
            true
        }
        fn close(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn closing_a_remote_environment_while_its_row_decodes_leaves_nothing_outstanding() {
        let tok = policy::tokenizer::char_tokenizer();
        let params = SamplingParams::default();
        let limits = EpisodeLimits {
            max_turns: 2,
            max_tokens: 64,
        };
        let closed = Arc::new(AtomicUsize::new(0));
        let problem = Problem {
            id: "p".into(),
            prompt: "1+1=".into(),
            answer: "2".into(),
            solution: "2".into(),
        };
        std::thread::scope(|scope| {
            let env: Box<dyn Environment> = Box::new(Remote(closed.clone()));
            let ep = Episode::new(0, problem, 0, Ok(env), &params, None, 0);
            let pool = Workers::spawn(scope, 1);
            let mut d = Driver::new(&tok, &params, limits, vec![ep], 1, Some(pool));
            // The reset goes out, comes back, and the episode joins the batch.
            let mut joined = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while joined.is_empty() && std::time::Instant::now() < deadline {
                joined = d.arrivals(true).expect("an answer is outstanding");
            }
            assert_eq!(joined.len(), 1);
            // Another episode of its group failed while this row was decoding: its next
            // pick closes the environment on a worker.
            d.failures[0] = Some(EnvError::Timeout(1));
            assert_eq!(d.pick(0, &[0.0; 4], 0), None);
            assert_eq!(d.outstanding, 0);
            // With no row decoding and nothing outstanding, the batch is over.
            assert!(d.arrivals(true).is_none());
        });
        assert_eq!(closed.load(Ordering::SeqCst), 1);
    }
}
