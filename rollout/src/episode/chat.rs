//! Episodes in the model's chat template. The first observation is the user's turn (after
//! an optional system prompt), each model turn is the assistant's, each environment answer
//! the user's next turn; the whole conversation is rendered with the template, and the tokens
//! a turn adds are the suffix it adds to the rendering (docs/chat-templates.md). Without a
//! template (the embedded default, base checkpoints) the observations are the text itself.
//!
//! A template must render a conversation so far as a prefix of its continuation (the prefix
//! property); [`ChatFormat::resolve`] refuses one that does not on a probe conversation, and
//! an episode whose rendering stops being an extension of what the model saw is dropped with
//! a clear reason rather than trained on tokens the model never saw together.

use crate::config::EpisodeConfig;
use policy::{ChatTemplate, Message, PolicyError, Tokenizer};
use std::path::Path;
use std::sync::Arc;
use tasks::EnvError;

/// `[episode] chat_template` value: the model's own template, if it has one.
pub const AUTO: &str = "auto";
/// `[episode] chat_template` value: plain text, whatever the model has.
pub const NONE: &str = "none";

/// A chat template and the system prompt episodes open with.
#[derive(Debug, Clone)]
pub struct ChatFormat {
    template: Arc<ChatTemplate>,
    system: Option<String>,
}

impl ChatFormat {
    /// `template` with an optional system prompt.
    pub fn new(template: Arc<ChatTemplate>, system: Option<String>) -> Self {
        ChatFormat { template, system }
    }

    /// The format `chat_template` and `system_prompt` ask for with this tokenizer: `auto`
    /// takes the model's template (none: plain text), `none` is plain text, anything else is
    /// the path of a Jinja file (rendered with the model's `bos_token` / `eos_token`). The
    /// template is checked for the prefix property on a probe conversation.
    pub fn resolve(
        chat_template: &str,
        system_prompt: Option<&str>,
        tok: &Tokenizer,
    ) -> policy::Result<Option<Arc<ChatFormat>>> {
        let template = match chat_template {
            NONE => None,
            AUTO => tok.chat_template().cloned(),
            path => {
                let path = Path::new(path);
                let source = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
                let model = tok.chat_template();
                let special = |f: fn(&ChatTemplate) -> Option<&str>| {
                    model.and_then(|t| f(t)).map(str::to_owned)
                };
                let t = ChatTemplate::new(
                    &source,
                    special(ChatTemplate::bos_token),
                    special(ChatTemplate::eos_token),
                )
                .map_err(|e| PolicyError::ChatTemplate {
                    path: path.into(),
                    message: e.to_string(),
                })?;
                Some(Arc::new(t))
            }
        };
        let Some(template) = template else {
            return Ok(None);
        };
        let format = ChatFormat::new(template, system_prompt.map(str::to_owned));
        format.check_prefix_property()?;
        Ok(Some(Arc::new(format)))
    }

    /// [`ChatFormat::resolve`] for a run's `[episode]` table.
    pub fn for_episodes(
        cfg: &EpisodeConfig,
        tok: &Tokenizer,
    ) -> policy::Result<Option<Arc<ChatFormat>>> {
        ChatFormat::resolve(&cfg.chat_template, cfg.system_prompt.as_deref(), tok)
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Renders a probe episode (user, assistant, user) turn by turn and refuses a template
    /// whose rendering of a turn is not a prefix of the next one's.
    fn check_prefix_property(&self) -> policy::Result<()> {
        let mut c = Conversation::new(Some(Arc::new(self.clone())));
        let refuse = |message: String| PolicyError::ChatTemplate {
            path: self.template.path().into(),
            message,
        };
        c.open("2+3=").map_err(|e| refuse(e.to_string()))?;
        c.model_turn("5", "");
        c.reply("and 5+7=").map_err(|e| refuse(e.to_string()))?;
        Ok(())
    }

    fn messages(&self) -> Vec<Message> {
        self.system.iter().map(Message::system).collect()
    }
}

/// One episode's conversation: what the model has been shown, as the template renders it.
#[derive(Debug, Clone)]
pub struct Conversation {
    format: Option<Arc<ChatFormat>>,
    messages: Vec<Message>,
    /// The text of the context so far (the renderings and the model's turns).
    shown: String,
}

impl Conversation {
    /// A conversation in `format`, or in plain text.
    pub fn new(format: Option<Arc<ChatFormat>>) -> Self {
        let messages = format.as_ref().map(|f| f.messages()).unwrap_or_default();
        Conversation {
            format,
            messages,
            shown: String::new(),
        }
    }

    /// Whether the conversation is rendered with a template (plain text otherwise).
    pub fn templated(&self) -> bool {
        self.format.is_some()
    }

    /// The text the first observation is shown as: the rendering of the conversation up to
    /// the assistant's first turn.
    pub fn open(&mut self, observation: &str) -> Result<String, EnvError> {
        let Some(format) = &self.format else {
            return Ok(observation.to_owned());
        };
        self.messages.push(Message::user(observation));
        let text = render(&format.template, &self.messages)?;
        self.shown = text.clone();
        Ok(text)
    }

    /// The model's turn: `content` is its text without the stop token, `stop` the stop
    /// token's text (empty when the turn was cut off).
    pub fn model_turn(&mut self, content: &str, stop: &str) {
        if self.format.is_some() {
            self.messages.push(Message::assistant(content));
            self.shown.push_str(content);
            self.shown.push_str(stop);
        }
    }

    /// The text the environment's answer adds to the context: the suffix the answer's turn
    /// (and the next generation prompt) adds to the rendering.
    pub fn reply(&mut self, observation: &str) -> Result<String, EnvError> {
        let Some(format) = &self.format else {
            return Ok(observation.to_owned());
        };
        self.messages.push(Message::user(observation));
        let text = render(&format.template, &self.messages)?;
        let Some(suffix) = text.strip_prefix(&self.shown) else {
            return Err(EnvError::Invalid(format!(
                "chat template {}: rendering the conversation after turn {} does not extend \
                 what the model was shown (the template rewrites earlier turns, or trims the \
                 model's text): {:?} is not a prefix of {:?}",
                format.template.path().display(),
                self.messages.len() / 2,
                self.shown,
                text
            )));
        };
        let suffix = suffix.to_owned();
        self.shown = text;
        Ok(suffix)
    }
}

/// The conversation with the generation prompt that opens the assistant's turn.
fn render(template: &ChatTemplate, messages: &[Message]) -> Result<String, EnvError> {
    template
        .render(messages, true)
        .map_err(|e| EnvError::Invalid(format!("chat template: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    fn chatml(system: Option<&str>) -> Option<Arc<ChatFormat>> {
        let t = ChatTemplate::new(CHATML, None, Some("<|im_end|>".into())).unwrap();
        Some(Arc::new(ChatFormat::new(
            Arc::new(t),
            system.map(str::to_owned),
        )))
    }

    #[test]
    fn plain_text_without_a_template() {
        let mut c = Conversation::new(None);
        assert_eq!(c.open("guess 1-8:").unwrap(), "guess 1-8:");
        c.model_turn("4", "</s>");
        assert_eq!(c.reply(" hi:").unwrap(), " hi:");
    }

    #[test]
    fn each_turn_adds_the_suffix_it_adds_to_the_rendering() {
        let mut c = Conversation::new(chatml(Some("Be brief.")));
        let first = c.open("guess 1-8:").unwrap();
        assert_eq!(
            first,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nguess 1-8:<|im_end|>\n<|im_start|>assistant\n"
        );
        c.model_turn("4", "<|im_end|>");
        let reply = c.reply("hi").unwrap();
        assert_eq!(
            reply,
            "\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        // The model's text, its stop token and every suffix make up the whole rendering.
        let whole = ChatTemplate::new(CHATML, None, None)
            .unwrap()
            .render(
                &[
                    Message::system("Be brief."),
                    Message::user("guess 1-8:"),
                    Message::assistant("4"),
                    Message::user("hi"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(whole, format!("{first}4<|im_end|>{reply}"));
    }

    #[test]
    fn a_turn_cut_off_before_its_stop_token_is_closed_by_the_environments_suffix() {
        let mut c = Conversation::new(chatml(None));
        c.open("q").unwrap();
        c.model_turn("12", "");
        assert_eq!(
            c.reply("lo").unwrap(),
            "<|im_end|>\n<|im_start|>user\nlo<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_template_that_rewrites_earlier_turns_is_refused_and_its_episode_dropped() {
        // Shows only the last user message: the rendering after a reply drops the first.
        let last_only = "{% for m in messages %}{% if loop.last or m.role == 'assistant' %}[{{ m.role }}]{{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}";
        let t = Arc::new(ChatTemplate::new(last_only, None, None).unwrap());
        let format = Arc::new(ChatFormat::new(t, None));
        let err = format.check_prefix_property().unwrap_err().to_string();
        assert!(err.contains("does not extend"), "{err}");
        let mut c = Conversation::new(Some(format));
        c.open("q").unwrap();
        c.model_turn("a", "");
        assert!(matches!(c.reply("r"), Err(EnvError::Invalid(_))));
    }

    #[test]
    fn resolve_takes_the_models_template_a_file_or_none() {
        let plain = policy::tokenizer::char_tokenizer();
        assert!(ChatFormat::resolve(AUTO, None, &plain).unwrap().is_none());
        let t = ChatTemplate::new(CHATML, None, Some("</s>".into())).unwrap();
        let tok = plain.clone().with_chat_template(t);
        let auto = ChatFormat::resolve(AUTO, Some("sys"), &tok)
            .unwrap()
            .unwrap();
        assert_eq!(auto.template().eos_token(), Some("</s>"));
        assert!(ChatFormat::resolve(NONE, None, &tok).unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.jinja");
        std::fs::write(&file, "{% for m in messages %}{{ m.content }}|{% endfor %}").unwrap();
        let from_file = ChatFormat::resolve(file.to_str().unwrap(), None, &tok)
            .unwrap()
            .unwrap();
        assert_eq!(from_file.template().eos_token(), Some("</s>"));
        let missing = ChatFormat::resolve("/no/such/template.jinja", None, &tok).unwrap_err();
        assert!(
            missing.to_string().contains("/no/such/template.jinja"),
            "{missing}"
        );
        std::fs::write(&file, "{% for m in messages %}").unwrap();
        let broken = ChatFormat::resolve(file.to_str().unwrap(), None, &tok).unwrap_err();
        assert!(broken.to_string().contains("t.jinja"), "{broken}");
    }
}
