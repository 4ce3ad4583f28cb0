//! Property: every built-in task's verifier accepts the task's own solution and rejects a
//! slightly wrong one, at every small difficulty, seed, split and index.

use proptest::prelude::*;
use tasks::{builtin, builtin_names, Problem, Split};

/// Wrong variants of a problem's solution, each paired with the answer to score it against.
fn perturbations(task: &str, problem: &Problem) -> Vec<(String, String)> {
    let answer = problem.answer.clone();
    match task {
        "addition" | "multiplication" | "guess" => {
            let value: u64 = problem.answer.parse().expect("numeric answer");
            vec![((value + 1).to_string(), answer)]
        }
        "countdown" => {
            let (target, numbers) = problem.answer.split_once('|').expect("target|numbers");
            let target: i64 = target.parse().expect("numeric target");
            vec![(
                problem.solution.clone(),
                format!("{}|{numbers}", target + 1),
            )]
        }
        "sorting" => {
            let mut list: Vec<&str> = problem.solution.split(' ').collect();
            let mut wrong = Vec::new();
            if let Some(at) = (1..list.len()).find(|&i| list[i] != list[i - 1]) {
                let mut swapped = list.clone();
                swapped.swap(at - 1, at);
                wrong.push((swapped.join(" "), answer.clone()));
            }
            list.pop();
            wrong.push((list.join(" "), answer));
            wrong
        }
        other => panic!("no perturbation for task {other}"),
    }
}

proptest! {
    #[test]
    fn verifier_accepts_solution_and_rejects_perturbations(
        task in prop::sample::select(builtin_names()),
        difficulty in 1_u32..=4,
        seed in any::<u64>(),
        eval in any::<bool>(),
        index in any::<u64>(),
    ) {
        let source = builtin(task, Some(difficulty), seed).unwrap();
        let split = if eval { Split::Eval } else { Split::Train };
        let problem = source.problem(split, index);
        let verifier = source.verifier();
        prop_assert_eq!(verifier.score(&problem.solution, &problem.answer), 1.0, "{:?}", problem);
        prop_assert_eq!(verifier.score("", &problem.answer), 0.0);
        for (completion, answer) in perturbations(task, &problem) {
            prop_assert_eq!(
                verifier.score(&completion, &answer),
                0.0,
                "{:?} scored {:?} against {:?}",
                problem,
                completion,
                answer
            );
        }
    }
}
