//! Verifiers by name, so configs and dataset specs can pick one and users can add their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::countdown::CountdownVerifier;
use crate::error::TaskError;
use crate::numeric::NumericVerifier;
use crate::sorting::SortingVerifier;
use crate::verifier::{ExactVerifier, Verifier};

/// A name-to-verifier table holding the built-in verifiers and any registered ones.
#[derive(Clone)]
pub struct VerifierRegistry {
    verifiers: BTreeMap<String, Arc<dyn Verifier>>,
}

impl VerifierRegistry {
    /// A registry holding the built-ins: `exact`, `numeric`, `countdown`, `sorting`.
    pub fn new() -> Self {
        let mut registry = Self {
            verifiers: BTreeMap::new(),
        };
        registry.register(Arc::new(ExactVerifier));
        registry.register(Arc::new(NumericVerifier));
        registry.register(Arc::new(CountdownVerifier));
        registry.register(Arc::new(SortingVerifier));
        registry
    }

    /// Adds `verifier` under its own name, replacing any verifier already under that name.
    pub fn register(&mut self, verifier: Arc<dyn Verifier>) {
        self.verifiers.insert(verifier.name().to_string(), verifier);
    }

    /// The verifier registered as `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Verifier>, TaskError> {
        self.verifiers
            .get(name)
            .cloned()
            .ok_or_else(|| TaskError::UnknownVerifier {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.verifiers.keys().cloned().collect()
    }
}

impl Default for VerifierRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for VerifierRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierRegistry")
            .field("names", &self.names())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct AlwaysRight;

    impl Verifier for AlwaysRight {
        fn name(&self) -> &str {
            "always"
        }
        fn extract(&self, completion: &str) -> Option<String> {
            Some(completion.to_string())
        }
        fn score(&self, _completion: &str, _answer: &str) -> f32 {
            1.0
        }
    }

    #[test]
    fn default_has_the_builtins() {
        let registry = VerifierRegistry::default();
        assert_eq!(
            registry.names(),
            ["countdown", "exact", "numeric", "sorting"]
        );
        for name in registry.names() {
            assert_eq!(registry.get(&name).unwrap().name(), name);
        }
    }

    #[test]
    fn registered_verifiers_can_be_fetched() {
        let mut registry = VerifierRegistry::new();
        assert!(registry.get("always").is_err());
        registry.register(Arc::new(AlwaysRight));
        assert_eq!(registry.get("always").unwrap().score("x", "y"), 1.0);
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = VerifierRegistry::new().get("fuzzy").err().unwrap();
        let message = err.to_string();
        assert!(message.contains("'fuzzy'"), "{message}");
        assert!(
            message.contains("countdown, exact, numeric, sorting"),
            "{message}"
        );
    }
}
