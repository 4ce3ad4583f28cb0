//! Supervised fine-tuning on task solutions: the warm start of the embedded default.
//!
//! Cross-entropy on the solution tokens (and the end-of-sequence token), the prompt masked
//! out; AdamW with warm-up and cosine decay.
//!
//! `label_noise` makes the warm start imitate a noisy corpus: that fraction of the solutions
//! has one digit replaced by another (a slip). The model then learns the
//! right answer as its mode but samples it only about `1 - label_noise` of the time at T = 1,
//! which is the situation RLVR is for: the knowledge is there, sampling it is not. The
//! embedded default is made this way (see docs/learning.md).
//!
//! A multi-turn task's solution lists the model's turns (separated by
//! `tasks::env::TURN_SEPARATOR`); it is played against the environment `env`, each turn
//! ending with the end-of-sequence token as a model turn does, and the environment's answers
//! are context: masked out of the loss, as in RL.
//!
//! A model with a chat template sees its demonstrations in it, laid out exactly as the
//! episodes of a run lay them out ([`rollout::Conversation`]), so the warm start and RL agree
//! on what the model is shown.

use crate::batch::{BatchRow, TokenBatch};
use crate::error::{LearnerError, Result};
use crate::optim::{learning_rate, AdamW, AdamWConfig};
use crate::params::TrainableModel;
use rollout::config::{at_least, real, ConfigError, Interval};
use rollout::{ChatFormat, Conversation};
use serde::{Deserialize, Serialize};
use tasks::{EnvFactory, Problem, ProblemSource, Split};

/// SFT hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Task spec (`addition`, `addition:3`, `FILE.jsonl`).
    pub task: String,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: u64,
    /// Seed of the training problems (the model init has its own seed).
    pub seed: u64,
    /// Fraction of training solutions with one digit replaced by a different one.
    pub label_noise: f64,
    /// The environment multi-turn solutions are played against (`single`: one turn).
    pub env: String,
    /// Model turns per episode of the held-out evaluation at the end.
    pub max_turns: u32,
    /// With `env = "calculator"`: the fraction of solutions shown as a tool call followed by
    /// the answer (`[12*34]`, `=408;`, `408`) instead of the answer alone.
    pub tool_rate: f64,
    /// How demonstrations are laid out: as `[episode] chat_template` (`auto`: the model's
    /// own template if it has one, `none`, or a Jinja file's path).
    pub chat_template: String,
    /// A system message that opens every demonstration (with a chat template only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    pub optimizer: AdamWConfig,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            task: "addition:2".into(),
            steps: 800,
            batch_size: 64,
            lr: 3e-3,
            warmup: 40,
            seed: 0,
            label_noise: 0.0,
            env: "single".into(),
            max_turns: 8,
            tool_rate: 0.0,
            chat_template: "auto".into(),
            system_prompt: None,
            optimizer: AdamWConfig {
                weight_decay: 0.01,
                eps: 1e-8,
                ..Default::default()
            },
        }
    }
}

impl SftConfig {
    /// Refuses values that cannot be meant, naming the field (as in `sft.toml`) and its range.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        at_least("steps", self.steps, 1)?;
        at_least("batch_size", self.batch_size as u64, 1)?;
        real("lr", self.lr, Interval::above(0.0, 1.0))?;
        real("label_noise", self.label_noise, Interval::UNIT)?;
        at_least("max_turns", self.max_turns as u64, 1)?;
        real("tool_rate", self.tool_rate, Interval::UNIT)?;
        if self.chat_template.trim().is_empty() {
            return Err(ConfigError::OutOfRange {
                field: "chat_template".into(),
                value: "\"\"".into(),
                allowed: "auto, none or the path of a Jinja file".into(),
            });
        }
        self.optimizer.validate("optimizer")
    }
}

/// Progress of one SFT step.
#[derive(Debug, Clone, Copy)]
pub struct SftStep {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub tokens: usize,
}

/// Trains `model` on `source`'s training solutions; `on_step` sees every step.
pub fn train_sft(
    model: &TrainableModel,
    source: &dyn ProblemSource,
    cfg: &SftConfig,
    eos: u32,
    mut on_step: impl FnMut(SftStep),
) -> Result<()> {
    cfg.validate()?;
    let tok = &model.tokenizer;
    let mut opt = AdamW::new(cfg.optimizer.clone());
    let device = model.policy().device().clone();
    let env = tasks::env::builtin(&cfg.env, source.verifier())?;
    let chat = ChatFormat::resolve(&cfg.chat_template, cfg.system_prompt.as_deref(), tok)?;
    let shown = Shown { tok, eos, chat };
    for step in 0..cfg.steps {
        let mut demos = Vec::with_capacity(cfg.batch_size);
        for i in 0..cfg.batch_size as u64 {
            let index = cfg.seed.wrapping_mul(1_000_003) + step * cfg.batch_size as u64 + i;
            let p = source.problem(Split::Train, index);
            let mut solution = noisy_solution(&p.solution, cfg.label_noise, index);
            let draw = (mix(index ^ 0x70_01) >> 11) as f64 / (1u64 << 53) as f64;
            if cfg.env == "calculator" && draw < cfg.tool_rate {
                let shown = Problem {
                    solution,
                    ..p.clone()
                };
                solution =
                    tasks::env::calculator::tool_demonstration(&shown).unwrap_or(shown.solution);
            }
            demos.push(demonstration(&p, &solution, env.as_ref(), &shown)?);
        }
        let rows: Vec<BatchRow> = demos
            .iter()
            .map(|d| BatchRow {
                prompt: &d.prompt,
                completion: &d.completion,
                mask: &d.mask,
            })
            .collect();
        let batch = TokenBatch::from_rows(&rows, tok.pad_id(), &device)?;
        let mask = batch.completion_mask()?;
        let logp = policy::next_token_logprobs(model.policy(), &batch.ids, &batch.pads, 1.0)?;
        let n = batch.completion_tokens() as f64;
        let loss = ((logp * &mask)?.sum_all()?.neg()? / n)?;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        if !loss_value.is_finite() {
            return Err(LearnerError::NonFinite {
                what: "SFT loss",
                step,
            });
        }
        let mut grads = crate::optim::Grads::new();
        crate::optim::accumulate(&mut grads, model.vars(), &loss.backward()?)?;
        let lr = learning_rate(cfg.lr, step, cfg.warmup, cfg.steps, 0.1);
        opt.step(model.vars(), &grads, lr)?;
        on_step(SftStep {
            step,
            loss: loss_value,
            lr,
            tokens: batch.completion_tokens(),
        });
    }
    Ok(())
}

/// How demonstrations are shown to the model: its tokenizer, its end of turn and its chat
/// template, if any.
struct Shown<'a> {
    tok: &'a policy::Tokenizer,
    eos: u32,
    chat: Option<std::sync::Arc<ChatFormat>>,
}

/// One demonstration: prompt, completion, and which completion tokens are the model's.
struct Demonstration {
    prompt: Vec<u32>,
    completion: Vec<u32>,
    mask: Vec<bool>,
}

/// `solution` of `p` as tokens: one turn and the end of sequence, or each of its turns
/// (ending with the end of sequence) with the environment's answers between them, masked.
fn demonstration(
    p: &Problem,
    solution: &str,
    env: &dyn EnvFactory,
    shown: &Shown,
) -> Result<Demonstration> {
    let Shown { tok, eos, .. } = *shown;
    let eos_text = tok.decode_with_special(&[eos])?;
    let mut conversation = Conversation::new(shown.chat.clone());
    let turns = tasks::env::solution_turns(solution);
    if turns.len() == 1 {
        let mut completion = tok.encode(solution)?;
        completion.push(eos);
        return Ok(Demonstration {
            prompt: tok.encode(&conversation.open(&p.prompt)?)?,
            completion,
            mask: Vec::new(),
        });
    }
    let mut env = env.make()?;
    let prompt = tok.encode(&conversation.open(&env.reset(p, 0)?)?)?;
    let (mut completion, mut mask) = (Vec::new(), Vec::new());
    for (i, turn) in turns.iter().enumerate() {
        let mut tokens = tok.encode(turn)?;
        tokens.push(eos);
        mask.extend(std::iter::repeat_n(true, tokens.len()));
        completion.extend(tokens);
        conversation.model_turn(turn, &eos_text);
        let step = env.step(turn)?;
        if step.done || i + 1 == turns.len() {
            break;
        }
        let obs = tok.encode(&conversation.reply(&step.observation)?)?;
        mask.extend(std::iter::repeat_n(false, obs.len()));
        completion.extend(obs);
    }
    Ok(Demonstration {
        prompt,
        completion,
        mask,
    })
}

/// splitmix64: the deterministic draws of the label noise.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// With probability `noise` (drawn from `index`), `solution` with one of its digits replaced
/// by a different digit drawn uniformly; otherwise, or when it has no digit, `solution`
/// unchanged.
pub fn noisy_solution(solution: &str, noise: f64, index: u64) -> String {
    let draw = mix(index ^ 0x6E6F_6973_6500_0000);
    if noise <= 0.0 || (draw >> 11) as f64 / (1u64 << 53) as f64 >= noise {
        return solution.to_string();
    }
    let digits: Vec<usize> = solution
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    if digits.is_empty() {
        return solution.to_string();
    }
    let pick = mix(draw);
    let at = digits[(pick % digits.len() as u64) as usize];
    let d = solution.as_bytes()[at] - b'0';
    // Any other digit, uniformly: the slip is never the right digit.
    let moved = (d + 1 + ((pick >> 32) % 9) as u8) % 10;
    let mut out = solution.to_string();
    out.replace_range(at..at + 1, &char::from(b'0' + moved).to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::{demonstration, noisy_solution, SftConfig, Shown};
    use std::sync::Arc;

    #[test]
    fn a_multi_turn_solution_is_played_and_the_answers_masked() {
        let tok = policy::tokenizer::char_tokenizer();
        let eos = tok.eos_ids()[0];
        let p = tasks::Problem {
            id: "guess-3/train/0".into(),
            prompt: "guess 3-10:".into(),
            answer: "5".into(),
            solution: "8\u{1f}4\u{1f}5".into(),
        };
        let env = tasks::env::builtin("guess", Arc::new(tasks::NumericVerifier)).unwrap();
        let plain = Shown {
            tok: &tok,
            eos,
            chat: None,
        };
        let d = demonstration(&p, &p.solution, env.as_ref(), &plain).unwrap();
        assert_eq!(tok.decode(&d.prompt).unwrap(), "guess 3-10:");
        // 8 </s> " lo:" 4 </s> " hi:" 5 </s>
        let model: Vec<u32> = (0..d.completion.len())
            .filter(|&k| d.mask[k])
            .map(|k| d.completion[k])
            .collect();
        let env_text: Vec<u32> = (0..d.completion.len())
            .filter(|&k| !d.mask[k])
            .map(|k| d.completion[k])
            .collect();
        assert_eq!(
            model,
            [
                tok.encode("8").unwrap(),
                vec![eos],
                tok.encode("4").unwrap(),
                vec![eos],
                tok.encode("5").unwrap(),
                vec![eos]
            ]
            .concat()
        );
        assert_eq!(tok.decode(&env_text).unwrap(), " lo: hi:");
        // A one-turn solution is the solution and the end of sequence, all the model's.
        let single = tasks::env::builtin("single", Arc::new(tasks::NumericVerifier)).unwrap();
        let one = tasks::Problem {
            solution: "42".into(),
            ..p
        };
        let d = demonstration(&one, "42", single.as_ref(), &plain).unwrap();
        assert_eq!(
            d.completion,
            [tok.encode("42").unwrap(), vec![eos]].concat()
        );
        assert!(d.mask.is_empty());
    }

    #[test]
    fn a_model_with_a_chat_template_is_shown_its_demonstrations_in_it() {
        let template = policy::ChatTemplate::new(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token if m.role == 'assistant' else '' }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
            None,
            Some("</s>".into()),
        )
        .unwrap();
        let tok = policy::tokenizer::char_tokenizer().with_chat_template(template);
        let eos = tok.eos_ids()[0];
        let chat = rollout::ChatFormat::resolve("auto", Some("Play."), &tok).unwrap();
        let shown = Shown {
            tok: &tok,
            eos,
            chat,
        };
        let p = tasks::Problem {
            id: "guess-3/train/0".into(),
            prompt: "guess 3-10:".into(),
            answer: "5".into(),
            solution: "8\u{1f}5".into(),
        };
        let env = tasks::env::builtin("guess", Arc::new(tasks::NumericVerifier)).unwrap();
        let d = demonstration(&p, &p.solution, env.as_ref(), &shown).unwrap();
        let text = |ids: &[u32]| tok.decode_with_special(ids).unwrap();
        assert_eq!(
            text(&d.prompt),
            "<system>Play.\n<user>guess 3-10:\n<assistant>"
        );
        // The whole demonstration is the template's rendering of the finished conversation.
        assert_eq!(
            text(&[d.prompt.clone(), d.completion.clone()].concat()),
            "<system>Play.\n<user>guess 3-10:\n<assistant>8</s>\n<user> lo:\n<assistant>5</s>"
        );
        let model: Vec<u32> = (0..d.completion.len())
            .filter(|&k| d.mask[k])
            .map(|k| d.completion[k])
            .collect();
        assert_eq!(text(&model), "8</s>5</s>");
    }

    #[test]
    fn an_sft_config_out_of_range_is_refused_by_name() {
        SftConfig::default().validate().unwrap();
        let cases = [
            (
                "lr",
                SftConfig {
                    lr: f64::NAN,
                    ..SftConfig::default()
                },
            ),
            (
                "batch_size",
                SftConfig {
                    batch_size: 0,
                    ..SftConfig::default()
                },
            ),
            (
                "steps",
                SftConfig {
                    steps: 0,
                    ..SftConfig::default()
                },
            ),
            (
                "label_noise",
                SftConfig {
                    label_noise: 1.5,
                    ..SftConfig::default()
                },
            ),
        ];
        for (field, cfg) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("{field} = ")), "{err}");
        }
    }

    #[test]
    fn label_noise_moves_one_digit_in_the_asked_fraction() {
        let n = 20_000u64;
        let mut changed = 0;
        for i in 0..n {
            let out = noisy_solution("579", 0.7, i);
            assert_eq!(out.len(), 3);
            let diff: Vec<(u8, u8)> = out
                .bytes()
                .zip("579".bytes())
                .filter(|(a, b)| a != b)
                .collect();
            assert!(diff.len() <= 1, "{out}");
            if let Some((a, b)) = diff.first() {
                assert!(a.is_ascii_digit() && a != b, "{out}");
                changed += 1;
            }
        }
        let frac = changed as f64 / n as f64;
        assert!((frac - 0.7).abs() < 0.02, "{frac}");
        assert_eq!(noisy_solution("579", 0.0, 3), "579");
        assert_eq!(noisy_solution("abc", 1.0, 3), "abc");
        assert_ne!(noisy_solution("9", 1.0, 3), "9");
    }
}
