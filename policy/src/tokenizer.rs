//! Text <-> token ids through a Hugging Face `tokenizer.json`, and the character-level
//! tokenizer that the embedded default model uses (written by oxrl itself).

use crate::error::{PolicyError, Result};
use std::path::{Path, PathBuf};

/// Special tokens of the character-level tokenizer, at ids 0..4.
pub const CHAR_SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

/// A loaded tokenizer plus the ids the sampler needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
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
        })
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
