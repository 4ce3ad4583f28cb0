//! Conversations rendered the way a model was trained to see them: the chat template (Jinja)
//! of a Hugging Face model directory, run through minijinja with what transformers'
//! `apply_chat_template` gives a template (`trim_blocks`, `lstrip_blocks`, loop controls,
//! `raise_exception`, its `tojson`, Python string methods, `bos_token` / `eos_token`).
//! docs/chat-templates.md describes the API and how the episodes use it.

use crate::error::{PolicyError, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The file of a model directory that holds the template and the special tokens.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// Where newer transformers versions save the template; it wins over `tokenizer_config.json`'s
/// `chat_template`, as it does in transformers.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
/// The name the template has inside the engine (error messages say `in chat_template:LINE`).
const TEMPLATE_NAME: &str = "chat_template";
/// The path given for templates that came from a string.
const IN_MEMORY: &str = "<memory>";

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks: `system`, `user`, `assistant` (templates may accept others, or refuse them).
    pub role: String,
    /// What they say, as plain text.
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Message::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Message::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new("assistant", content)
    }
}

/// A model's chat template, compiled, with the special tokens it is rendered with.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    path: PathBuf,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("path", &self.path)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Loads the chat template of a Hugging Face model directory: `chat_template.jinja` if
    /// the directory has one, else the `chat_template` field of `tokenizer_config.json` (a
    /// string, or a list of `{name, template}` of which `default` is taken); `bos_token` and
    /// `eos_token` come from `tokenizer_config.json` (strings, or objects with a `content`).
    /// `None` when the directory has no template (base models often have none).
    pub fn from_dir(dir: &Path) -> Result<Option<ChatTemplate>> {
        let config_path = dir.join(TOKENIZER_CONFIG);
        let config = match read_if_present(&config_path)? {
            Some(text) => Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| error(&config_path, format!("not valid JSON: {e}")))?,
            ),
            None => None,
        };
        let token = |key: &str| match &config {
            Some(config) => special_token(config, key, &config_path),
            None => Ok(None),
        };
        let (bos_token, eos_token) = (token("bos_token")?, token("eos_token")?);

        let jinja_path = dir.join(CHAT_TEMPLATE_FILE);
        let (source, path) = if let Some(text) = read_if_present(&jinja_path)? {
            (text, jinja_path)
        } else {
            match config
                .as_ref()
                .map(|c| template_field(c, &config_path))
                .transpose()?
                .flatten()
            {
                Some(text) => (text, config_path),
                None => return Ok(None),
            }
        };
        ChatTemplate::build(source, path, bos_token, eos_token).map(Some)
    }

    /// Compiles a template given as text (the value of a `chat_template` field), rendered
    /// with these special tokens (`None`: the template sees them undefined, as transformers
    /// does for a tokenizer without them). Compile errors are reported here, not at the
    /// first render.
    pub fn new(template: &str, bos: Option<String>, eos: Option<String>) -> Result<Self> {
        ChatTemplate::build(template.to_owned(), PathBuf::from(IN_MEMORY), bos, eos)
    }

    fn build(
        source: String,
        path: PathBuf,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // transformers compiles templates with trim_blocks and lstrip_blocks, no autoescape.
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| error(&path, e.to_string()))?;
        env.set_syntax(syntax);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(&source))
            .map_err(|e| error(&path, format!("does not compile: {e}")))?;
        Ok(ChatTemplate {
            env,
            source,
            path,
            bos_token,
            eos_token,
        })
    }

    /// Renders a conversation as the model sees it; `add_generation_prompt` appends what
    /// opens the assistant's next turn. The template sees `messages` (maps of `role` and
    /// `content`), `add_generation_prompt`, `bos_token` and `eos_token` where known, and
    /// `tools` and `documents` as none.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())])
            })
            .collect();
        let mut context = vec![
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        if let Some(bos) = &self.bos_token {
            context.push(("bos_token", Value::from(bos.as_str())));
        }
        if let Some(eos) = &self.eos_token {
            context.push(("eos_token", Value::from(eos.as_str())));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| error(&self.path, e.to_string()))?;
        template
            .render(Value::from_pairs(context))
            .map_err(|e| error(&self.path, render_error_message(&e)))
    }

    /// The template's text, as it was read.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The file the template came from (`<memory>` for [`ChatTemplate::new`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
}

fn error(path: &Path, message: impl Into<String>) -> PolicyError {
    PolicyError::ChatTemplate {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A file's text, or `None` when it does not exist.
fn read_if_present(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PolicyError::io(path, e)),
    }
}

/// `chat_template` of a tokenizer config: a string, or a list of `{name, template}` of which
/// the one named `default` is taken (transformers refuses a list without one, so do we).
fn template_field(config: &serde_json::Value, path: &Path) -> Result<Option<String>> {
    use serde_json::Value as J;
    match config.get("chat_template") {
        None | Some(J::Null) => Ok(None),
        Some(J::String(text)) => Ok(Some(text.clone())),
        Some(J::Array(entries)) => {
            let mut names = Vec::new();
            for entry in entries {
                let name = entry.get("name").and_then(J::as_str);
                let template = entry.get("template").and_then(J::as_str);
                match (name, template) {
                    (Some("default"), Some(template)) => return Ok(Some(template.to_owned())),
                    (Some(name), Some(_)) => names.push(name.to_owned()),
                    _ => {
                        return Err(error(
                            path,
                            format!(
                                "chat_template list entry {entry} is not {{\"name\": string, \
                                 \"template\": string}}"
                            ),
                        ))
                    }
                }
            }
            Err(error(
                path,
                format!("chat_template lists templates {names:?} but none named \"default\""),
            ))
        }
        Some(other) => Err(error(
            path,
            format!(
                "chat_template must be a string or a list of {{name, template}}, found {other}"
            ),
        )),
    }
}

/// A special token of a tokenizer config: a string, or an `AddedToken` object with `content`.
fn special_token(config: &serde_json::Value, key: &str, path: &Path) -> Result<Option<String>> {
    use serde_json::Value as J;
    match config.get(key) {
        None | Some(J::Null) => Ok(None),
        Some(J::String(token)) => Ok(Some(token.clone())),
        Some(J::Object(fields)) => match fields.get("content") {
            Some(J::String(token)) => Ok(Some(token.clone())),
            _ => Err(error(
                path,
                format!("{key} is an object without a string \"content\""),
            )),
        },
        Some(other) => Err(error(
            path,
            format!("{key} must be a string or an object with \"content\", found {other}"),
        )),
    }
}

/// What a template passed to `raise_exception`, kept as the error's source so that the
/// message can say it was the template that refused.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// transformers' `raise_exception(message)`: templates call it to refuse a conversation.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedException(message)),
    )
}

fn render_error_message(e: &minijinja::Error) -> String {
    let raised = std::error::Error::source(e).and_then(|s| s.downcast_ref::<RaisedException>());
    match (raised, e.line()) {
        (Some(raised), Some(line)) => {
            format!("the template raised an exception (line {line}): {raised}")
        }
        (Some(raised), None) => format!("the template raised an exception: {raised}"),
        (None, _) => format!("rendering failed: {e}"),
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, sort_keys=False)`,
/// so `", "` and `": "` between items without `indent`, `","` and newlines with it, and no
/// HTML escaping (Jinja's own `tojson` escapes `<`, `>`, `&`, `'`; minijinja's too).
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_usize(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n)),
            (None, Some(s)) => Some(s.to_owned()),
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: indent must be a number or a string, not {v}"),
                ))
            }
        },
    };
    let opts = JsonOptions {
        indent,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(out)
}

struct JsonOptions {
    indent: Option<String>,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn write_json(
    out: &mut String,
    value: &Value,
    opts: &JsonOptions,
    depth: usize,
) -> std::result::Result<(), minijinja::Error> {
    let fail = |what: String| {
        Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: {what} is not JSON serializable"),
        ))
    };
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        // Display writes floats as Python does for the common cases (`1.0`, `0.5`).
        ValueKind::Number => {
            let text = value.to_string();
            out.push_str(match text.as_str() {
                "inf" => "Infinity",
                "-inf" => "-Infinity",
                _ => &text,
            });
        }
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or(""), opts),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_json_container(out, ('[', ']'), &items, opts, depth, |out, item, opts| {
                write_json(out, item, opts, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let key = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None if key.kind() == ValueKind::Number || key.is_none() => {
                        let mut text = String::new();
                        write_json(&mut text, &key, opts, depth)?;
                        text
                    }
                    None => return fail(format!("a map key of kind {}", key.kind())),
                };
                entries.push((key, item));
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_json_container(
                out,
                ('{', '}'),
                &entries,
                opts,
                depth,
                |out, (key, item), opts| {
                    write_json_string(out, key, opts);
                    out.push_str(": ");
                    write_json(out, item, opts, depth + 1)
                },
            )?;
        }
        kind => return fail(format!("a value of kind {kind}")),
    }
    Ok(())
}

fn write_json_container<T>(
    out: &mut String,
    (open, close): (char, char),
    items: &[T],
    opts: &JsonOptions,
    depth: usize,
    mut write_item: impl FnMut(
        &mut String,
        &T,
        &JsonOptions,
    ) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        match &opts.indent {
            Some(indent) => {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(&indent.repeat(depth + 1));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        write_item(out, item, opts)?;
    }
    if let Some(indent) = &opts.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// A JSON string as Python's `json.dumps` writes it.
fn write_json_string(out: &mut String, s: &str, opts: &JsonOptions) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (opts.ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// transformers' `{% generation %}` … `{% endgeneration %}` marks the assistant's tokens
/// (for `return_assistant_tokens_mask`) and otherwise renders its body unchanged; minijinja
/// has no such tag, so it becomes `{% if true %}` … `{% endif %}`, whitespace control kept.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        match generation_tag(tag) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// If `tag` (which starts with `{%`) opens with a `generation` or `endgeneration` tag: the
/// tag's length and its replacement.
fn generation_tag(tag: &str) -> Option<(usize, String)> {
    let bytes = tag.as_bytes();
    let is_control = |i: usize| matches!(bytes.get(i), Some(b'-' | b'+'));
    let skip_space = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = 2;
    let open = if is_control(i) {
        i += 1;
        &tag[2..3]
    } else {
        ""
    };
    i = skip_space(i);
    let word_start = i;
    while bytes
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        i += 1;
    }
    let replacement = match &tag[word_start..i] {
        "generation" => "if true",
        "endgeneration" => "endif",
        _ => return None,
    };
    i = skip_space(i);
    let close = if is_control(i) {
        i += 1;
        &tag[i - 1..i]
    } else {
        ""
    };
    tag[i..]
        .starts_with("%}")
        .then(|| (i + 2, format!("{{%{open} {replacement} {close}%}}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2's template (ChatML), as its tokenizer_config.json has it.
    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    /// Llama 3 style: `bos_token` once, a default system turn when the first is not one,
    /// contents stripped two ways, unknown roles refused.
    const LLAMA3: &str = r#"{{- bos_token }}
{%- for message in messages %}
    {%- if message['role'] not in ['system', 'user', 'assistant'] %}
        {{- raise_exception('Conversation roles must be system, user or assistant, not ' + message['role']) }}
    {%- endif %}
    {%- if loop.first and message['role'] != 'system' %}
        {{- '<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>' }}
    {%- endif %}
    {%- if message['role'] == 'system' %}
        {%- set content = message['content'] | trim %}
    {%- else %}
        {%- set content = message['content'].strip() %}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + content + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

    /// Zephyr's template: no whitespace control, so `trim_blocks` / `lstrip_blocks` decide
    /// the newlines; `eos_token` after every turn.
    const ZEPHYR: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

    fn conversation() -> Vec<Message> {
        vec![
            Message::system("You are a careful calculator."),
            Message::user("What is 2+3?"),
            Message::assistant("5"),
            Message::user("And 5+7?"),
        ]
    }

    #[test]
    fn chatml_renders_each_turn_and_the_generation_prompt() {
        let t = ChatTemplate::new(CHATML, None, Some("<|im_end|>".into())).unwrap();
        let msgs = conversation();
        let turns = "<|im_start|>system\nYou are a careful calculator.<|im_end|>\n\
                     <|im_start|>user\nWhat is 2+3?<|im_end|>\n\
                     <|im_start|>assistant\n5<|im_end|>\n\
                     <|im_start|>user\nAnd 5+7?<|im_end|>\n";
        assert_eq!(t.render(&msgs, false).unwrap(), turns);
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            format!("{turns}<|im_start|>assistant\n")
        );
        assert_eq!(t.render(&[], false).unwrap(), "");
        assert_eq!(t.render(&[], true).unwrap(), "<|im_start|>assistant\n");
    }

    #[test]
    fn chatml_rendering_of_a_prefix_is_a_prefix() {
        let t = ChatTemplate::new(CHATML, None, None).unwrap();
        let msgs = conversation();
        let whole = t.render(&msgs, false).unwrap();
        for n in 0..=msgs.len() {
            let part = t.render(&msgs[..n], false).unwrap();
            assert!(whole.starts_with(&part), "{n} turns: {part:?}");
            // The generation prompt opens exactly the assistant turn that follows.
            if n < msgs.len() && msgs[n].role == "assistant" {
                let prompted = t.render(&msgs[..n], true).unwrap();
                assert!(whole.starts_with(&prompted), "{n} turns: {prompted:?}");
            }
        }
    }

    #[test]
    fn llama3_style_template_uses_bos_loop_first_strip_and_trim() {
        let t = ChatTemplate::new(
            LLAMA3,
            Some("<|begin_of_text|>".into()),
            Some("<|eot_id|>".into()),
        )
        .unwrap();
        let msgs = vec![Message::user("  What is 2+3?\n"), Message::assistant(" 5 ")];
        let expected = "<|begin_of_text|>\
            <|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>\
            <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>\
            <|start_header_id|>assistant<|end_header_id|>\n\n5<|eot_id|>";
        assert_eq!(t.render(&msgs, false).unwrap(), expected);

        let with_system = vec![Message::system("\tBe brief. "), Message::user("Hi")];
        assert_eq!(
            t.render(&with_system, true).unwrap(),
            "<|begin_of_text|>\
             <|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn raise_exception_becomes_an_error_with_the_templates_words() {
        let t = ChatTemplate::new(LLAMA3, Some("<s>".into()), None).unwrap();
        let err = t.render(&[Message::new("tool", "42")], false).unwrap_err();
        assert!(matches!(err, PolicyError::ChatTemplate { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("Conversation roles must be system, user or assistant, not tool"),
            "{text}"
        );
        assert!(text.contains("raised an exception"), "{text}");
        assert!(text.contains("<memory>"), "{text}");
    }

    #[test]
    fn trim_and_lstrip_blocks_are_on_as_in_transformers() {
        let t = ChatTemplate::new(ZEPHYR, Some("<s>".into()), Some("</s>".into())).unwrap();
        let msgs = vec![Message::system("Be kind."), Message::user("Hello")];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|system|>\nBe kind.</s>\n<|user|>\nHello</s>\n<|assistant|>\n"
        );
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<|system|>\nBe kind.</s>\n<|user|>\nHello</s>\n"
        );
    }

    #[test]
    fn templates_see_tools_none_and_python_methods_and_loop_controls() {
        let src = "{% if tools is none %}no tools;{% endif %}\
                   {% for m in messages %}{% if m.content.startswith('skip') %}{% continue %}{% endif %}\
                   {{ m.role.upper() }}:{{ m.content.split(',') | join('+') }};\
                   {% if m.content.endswith('stop') %}{% break %}{% endif %}{% endfor %}\
                   {{ bos_token is defined }}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        let msgs = vec![
            Message::user("a,b"),
            Message::user("skip me"),
            Message::assistant("c then stop"),
            Message::user("never"),
        ];
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "no tools;USER:a+b;ASSISTANT:c then stop;False"
        );
    }

    #[test]
    fn tojson_writes_as_transformers_does() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ [] | tojson }}|{{ {'b': [1, 2.5, none, true], 'a': 'x<y'} | tojson(sort_keys=true) }}",
            None,
            None,
        )
        .unwrap();
        let out = t.render(&[Message::user("é \"quoted\"\n")], false).unwrap();
        let expected = concat!(
            r#"{"role": "user", "content": "é \"quoted\"\n"}|"#,
            "{\n  \"role\": \"user\",\n  \"content\": \"é \\\"quoted\\\"\\n\"\n}|",
            "[]|",
            r#"{"a": "x<y", "b": [1, 2.5, null, true]}"#,
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn generation_tags_render_their_body() {
        let src = "{% for m in messages %}{% if m.role == 'assistant' %}{%- generation %}[{{ m.content }}]{% endgeneration -%}{% else %}{{ m.content }}{% endif %}{% endfor %}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        let msgs = vec![Message::user("q"), Message::assistant("a")];
        assert_eq!(t.render(&msgs, false).unwrap(), "q[a]");
        assert_eq!(
            rewrite_generation_tags("{%- generation +%}x{%endgeneration%}{% generations %}"),
            "{%- if true +%}x{% endif %}{% generations %}"
        );
    }

    #[test]
    fn a_template_that_does_not_compile_is_refused_up_front() {
        let err = ChatTemplate::new("{% for m in messages %}", None, None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("does not compile"), "{text}");
    }

    #[test]
    fn a_function_transformers_has_but_we_do_not_fails_by_name() {
        let t = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}", None, None).unwrap();
        let text = t.render(&[], false).unwrap_err().to_string();
        assert!(text.contains("strftime_now"), "{text}");
        assert!(text.contains("<memory>"), "{text}");
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn from_dir_reads_tokenizer_config_json() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            ChatTemplate::from_dir(dir.path()).unwrap().is_none(),
            "no file"
        );

        write(
            dir.path(),
            TOKENIZER_CONFIG,
            r#"{"bos_token": null, "eos_token": "<|im_end|>", "model_max_length": 32768}"#,
        );
        assert!(
            ChatTemplate::from_dir(dir.path()).unwrap().is_none(),
            "no field"
        );

        let config = serde_json::json!({
            "bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>", "lstrip": false},
            "eos_token": "<|eot_id|>",
            "chat_template": LLAMA3,
        });
        write(dir.path(), TOKENIZER_CONFIG, &config.to_string());
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(t.bos_token(), Some("<|begin_of_text|>"));
        assert_eq!(t.eos_token(), Some("<|eot_id|>"));
        assert_eq!(t.path(), dir.path().join(TOKENIZER_CONFIG));
        assert_eq!(t.source(), LLAMA3);
        assert_eq!(
            t.render(&[Message::system("S"), Message::user("U")], true)
                .unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        // A template error names the file the template came from.
        let err = t.render(&[Message::new("tool", "x")], false).unwrap_err();
        assert!(
            err.to_string()
                .contains(&dir.path().join(TOKENIZER_CONFIG).display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn from_dir_takes_the_default_of_a_template_list() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "eos_token": "<|im_end|>",
            "chat_template": [
                {"name": "tool_use", "template": "TOOLS"},
                {"name": "default", "template": CHATML},
            ],
        });
        write(dir.path(), TOKENIZER_CONFIG, &config.to_string());
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(
            t.render(&[Message::user("hi")], true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );

        let config = serde_json::json!({"chat_template": [{"name": "tool_use", "template": "T"}]});
        write(dir.path(), TOKENIZER_CONFIG, &config.to_string());
        let err = ChatTemplate::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("none named \"default\""), "{err}");
        assert!(err.contains(TOKENIZER_CONFIG), "{err}");

        write(dir.path(), TOKENIZER_CONFIG, "{not json");
        let err = ChatTemplate::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn chat_template_jinja_wins_over_the_config_field() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({"eos_token": "</s>", "chat_template": "FROM CONFIG"});
        write(dir.path(), TOKENIZER_CONFIG, &config.to_string());
        write(
            dir.path(),
            CHAT_TEMPLATE_FILE,
            "{% for m in messages %}{{ m.content + eos_token }}{% endfor %}\n",
        );
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(t.path(), dir.path().join(CHAT_TEMPLATE_FILE));
        assert_eq!(t.render(&[Message::user("a")], false).unwrap(), "a</s>");
    }

    #[test]
    fn messages_round_trip_through_json() {
        let m = Message::assistant("5");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"role":"assistant","content":"5"}"#);
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn message() -> impl Strategy<Value = Message> {
            (
                prop_oneof![Just("system"), Just("user"), Just("assistant")],
                "\\PC{0,12}",
            )
                .prop_map(|(role, content)| Message::new(role, content))
        }

        proptest! {
            /// The episodes find a turn's tokens as the suffix its rendering adds.
            #[test]
            fn chatml_prefix_renders_to_a_prefix(msgs in prop::collection::vec(message(), 0..6)) {
                let t = ChatTemplate::new(CHATML, None, None).unwrap();
                let whole = t.render(&msgs, false).unwrap();
                for n in 0..=msgs.len() {
                    let part = t.render(&msgs[..n], false).unwrap();
                    prop_assert!(whole.starts_with(&part));
                }
            }
        }
    }
}
