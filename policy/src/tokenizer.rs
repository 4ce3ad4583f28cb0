//! Text <-> token ids through a Hugging Face `tokenizer.json`, and the character-level
//! tokenizer that the embedded default model uses (written by oxrl itself). A tokenizer
//! loaded from a model directory also carries the model's chat template (as transformers'
//! tokenizers do), and writes its files back when the directory is saved.

use crate::chat::{ChatTemplate, CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG};
use crate::error::{PolicyError, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Special tokens of the character-level tokenizer, at ids 0..4.
pub const CHAR_SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

/// A loaded tokenizer plus the ids the sampler needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    chat: Option<Chat>,
}

/// A chat template and the files it came from (written back as they were read).
#[derive(Clone)]
struct Chat {
    template: Arc<ChatTemplate>,
    files: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field(
                "chat_template",
                &self.chat.as_ref().map(|c| c.template.path()),
            )
            .finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| PolicyError::Tokenizer {
            path: path.into(),
            message: e.to_string(),
        })?;
        Ok(Tokenizer {
            inner,
            path: path.into(),
            chat: None,
        })
    }

    /// Loads a model directory's `tokenizer.json` with its chat template, if it has one
    /// (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`).
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let mut tok = Tokenizer::load(&dir.join("tokenizer.json"))?;
        if let Some(template) = ChatTemplate::from_dir(dir)? {
            let mut files = Vec::new();
            for name in [TOKENIZER_CONFIG, CHAT_TEMPLATE_FILE] {
                let path = dir.join(name);
                match std::fs::read_to_string(&path) {
                    Ok(text) => files.push((name, text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(PolicyError::io(&path, e)),
                }
            }
            tok.chat = Some(Chat {
                template: Arc::new(template),
                files,
            });
        }
        Ok(tok)
    }

    /// This tokenizer with `template` as its chat template; a saved directory gets it in a
    /// `tokenizer_config.json` of its own (`chat_template`, `bos_token`, `eos_token`).
    pub fn with_chat_template(mut self, template: ChatTemplate) -> Self {
        let mut config = serde_json::json!({ "chat_template": template.source() });
        if let Some(bos) = template.bos_token() {
            config["bos_token"] = bos.into();
        }
        if let Some(eos) = template.eos_token() {
            config["eos_token"] = eos.into();
        }
        let text = serde_json::to_string_pretty(&config).expect("JSON of strings");
        self.chat = Some(Chat {
            template: Arc::new(template),
            files: vec![(TOKENIZER_CONFIG, text)],
        });
        self
    }

    /// The model's chat template, if its directory had one.
    pub fn chat_template(&self) -> Option<&Arc<ChatTemplate>> {
        self.chat.as_ref().map(|c| &c.template)
    }

    /// Parses a tokenizer from JSON text (the content of a `tokenizer.json`).
    pub fn from_json(json: &str) -> Result<Self> {
        let inner: tokenizers::Tokenizer =
            json.parse()
                .map_err(|e: tokenizers::Error| PolicyError::Tokenizer {
                    path: PathBuf::from("<memory>"),
                    message: e.to_string(),
                })?;
        Ok(Tokenizer {
            inner,
            path: PathBuf::from("<memory>"),
            chat: None,
        })
    }

    /// Writes the tokenizer as `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, true)
            .map_err(|e| PolicyError::Tokenizer {
                path: path.into(),
                message: e.to_string(),
            })
    }

    /// Writes `tokenizer.json` into `dir`, and the chat template's files when there is one.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        self.save(&dir.join("tokenizer.json"))?;
        for (name, text) in self.chat.iter().flat_map(|c| &c.files) {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| PolicyError::io(&path, e))?;
        }
        Ok(())
    }

    /// Token ids of `text`, with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| self.err(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| self.err(e.to_string()))
    }

    /// Text of `ids`, special tokens written out (`<|im_end|>`): what a chat template's
    /// rendering holds where these tokens stand.
    pub fn decode_with_special(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| self.err(e.to_string()))
    }

    /// Number of ids the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// End-of-sequence ids known to the tokenizer by the usual names.
    pub fn eos_ids(&self) -> Vec<u32> {
        [
            "</s>",
            "<|endoftext|>",
            "<|im_end|>",
            "<|end_of_text|>",
            "<|eot_id|>",
        ]
        .iter()
        .filter_map(|t| self.token_id(t))
        .collect()
    }

    /// The padding id: `<pad>` if present, else the first end-of-sequence id, else 0.
    pub fn pad_id(&self) -> u32 {
        self.token_id("<pad>")
            .or_else(|| self.eos_ids().first().copied())
            .unwrap_or(0)
    }

    fn err(&self, message: String) -> PolicyError {
        PolicyError::Tokenizer {
            path: self.path.clone(),
            message,
        }
    }
}

/// The characters of the character-level vocabulary: printable ASCII and newline.
pub fn char_alphabet() -> Vec<char> {
    let mut chars: Vec<char> = (b' '..=b'~').map(char::from).collect();
    chars.push('\n');
    chars
}

/// JSON text of the character-level tokenizer: a BPE model with no merges (so every
/// character is one token), `<pad> <s> </s> <unk>` at ids 0..4, and a `Fuse` decoder so
/// decoding concatenates characters. Hugging Face `tokenizers` loads it as it is.
pub fn char_tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, tok) in CHAR_SPECIALS.iter().enumerate() {
        vocab.insert(tok.to_string(), id.into());
        added.push(serde_json::json!({
            "id": id, "content": tok, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    }
    for (i, c) in char_alphabet().into_iter().enumerate() {
        vocab.insert(c.to_string(), (i + CHAR_SPECIALS.len()).into());
    }
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []
        }
    });
    serde_json::to_string_pretty(&json).expect("tokenizer json serialises")
}

/// The character-level tokenizer, parsed.
pub fn char_tokenizer() -> Tokenizer {
    Tokenizer::from_json(&char_tokenizer_json()).expect("built-in tokenizer parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directorys_chat_template_loads_with_its_tokenizer_and_is_saved_back_as_read() {
        let dir = tempfile::tempdir().unwrap();
        char_tokenizer()
            .save(&dir.path().join("tokenizer.json"))
            .unwrap();
        assert!(Tokenizer::load_dir(dir.path())
            .unwrap()
            .chat_template()
            .is_none());
        let config = "{\"eos_token\": \"</s>\", \"model_max_length\": 512}";
        let jinja = "{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}";
        std::fs::write(dir.path().join(TOKENIZER_CONFIG), config).unwrap();
        std::fs::write(dir.path().join(CHAT_TEMPLATE_FILE), jinja).unwrap();
        let tok = Tokenizer::load_dir(dir.path()).unwrap();
        let t = tok.chat_template().expect("a template");
        assert_eq!((t.source(), t.eos_token()), (jinja, Some("</s>")));
        let out = tempfile::tempdir().unwrap();
        tok.save_dir(out.path()).unwrap();
        let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap();
        assert_eq!(read(TOKENIZER_CONFIG), config);
        assert_eq!(read(CHAT_TEMPLATE_FILE), jinja);
        // A template attached by hand is saved in a tokenizer_config.json of its own.
        let by_hand = char_tokenizer().with_chat_template(t.as_ref().clone());
        let again = tempfile::tempdir().unwrap();
        by_hand.save_dir(again.path()).unwrap();
        let loaded = Tokenizer::load_dir(again.path()).unwrap();
        let t2 = loaded.chat_template().unwrap();
        assert_eq!((t2.source(), t2.eos_token()), (jinja, Some("</s>")));
        assert_eq!(by_hand.decode_with_special(&[2]).unwrap(), "</s>");
        assert_eq!(by_hand.decode(&[2]).unwrap(), "");
    }

    #[test]
    fn char_tokenizer_round_trips_text_one_token_per_char() {
        let tok = char_tokenizer();
        assert_eq!(tok.vocab_size(), 4 + 96);
        let text = "123+456=579\n sort 3 1:";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids.len(), text.chars().count());
        assert!(ids.iter().all(|&i| i >= 4));
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(tok.eos_ids(), vec![2]);
        assert_eq!(tok.pad_id(), 0);
        let mut with_eos = ids.clone();
        with_eos.push(2);
        assert_eq!(tok.decode(&with_eos).unwrap(), text);
    }

    #[test]
    fn char_tokenizer_survives_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        char_tokenizer().save(&path).unwrap();
        let tok = Tokenizer::load(&path).unwrap();
        assert_eq!(tok.encode("9*9=81").unwrap().len(), 6);
    }
}
