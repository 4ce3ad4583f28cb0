//! Majority vote (self-consistency) over the answers a task's verifier extracts from N
//! samples of one prompt.
//!
//! Samples with no extractable answer do not vote. Ties are broken deterministically: among
//! the answers with the most votes, the one that appears first in sample order wins, so the
//! result depends only on the samples and their order, never on hashing.

use std::collections::HashMap;

/// The winning answer of a vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The answer with the most votes.
    pub answer: String,
    /// Votes it received.
    pub votes: usize,
    /// The first sample that gave it: the one to score and show.
    pub first: usize,
}

/// The majority answer of `answers` (one per sample, `None` where nothing was extracted);
/// `None` if no sample has an answer.
pub fn majority_vote<S: AsRef<str>>(answers: &[Option<S>]) -> Option<Vote> {
    // answer -> (first sample, votes)
    let mut tally: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, a) in answers.iter().enumerate() {
        if let Some(a) = a {
            tally.entry(a.as_ref()).or_insert((i, 0)).1 += 1;
        }
    }
    tally
        .into_iter()
        .max_by(|(_, (fa, va)), (_, (fb, vb))| va.cmp(vb).then(fb.cmp(fa)))
        .map(|(answer, (first, votes))| Vote {
            answer: answer.to_string(),
            votes,
            first,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_common_answer_wins() {
        let v =
            majority_vote(&[Some("3"), Some("5"), Some("5"), None, Some("3"), Some("5")]).unwrap();
        assert_eq!(
            v,
            Vote {
                answer: "5".into(),
                votes: 3,
                first: 1
            }
        );
    }

    #[test]
    fn ties_go_to_the_answer_seen_first() {
        let answers = [None, Some("7"), Some("2"), Some("2"), Some("7")];
        let v = majority_vote(&answers).unwrap();
        assert_eq!((v.answer.as_str(), v.votes, v.first), ("7", 2, 1));
        // Same multiset, other order: the other answer wins, every time.
        let answers = [Some("2"), Some("7"), Some("7"), Some("2")];
        for _ in 0..20 {
            assert_eq!(majority_vote(&answers).unwrap().answer, "2");
        }
        let singles = [Some("c"), Some("a"), Some("b")];
        assert_eq!(majority_vote(&singles).unwrap().answer, "c");
    }

    #[test]
    fn no_answers_no_vote() {
        assert_eq!(majority_vote::<&str>(&[None, None]), None);
        assert_eq!(majority_vote::<String>(&[]), None);
    }
}
