//! Two data-parallel ranks on loopback take exactly the step one process takes.

mod common;

use learner::collective::TcpCollective;
use learner::{Learner, TrainableModel, UpdateConfig};
use std::net::TcpListener;

fn config() -> UpdateConfig {
    // Small micro-batches so both ranks get rows.
    UpdateConfig {
        warmup: 0,
        lr: 1e-2,
        micro_batch: 2,
        ..Default::default()
    }
}

fn groups(model: &TrainableModel) -> Vec<rollout::RolloutGroup> {
    vec![
        common::group(
            model,
            "a",
            "12+3=",
            &[("15", 1.0, 0.3), ("51", 0.0, -0.2), ("1", 0.0, 0.1)],
        ),
        common::group(
            model,
            "b",
            "7+7=",
            &[("14", 1.0, -0.4), ("41", 1.0, 0.5), ("4", 0.0, 0.0)],
        ),
        common::group(
            model,
            "c",
            "9+1=",
            &[("10", 0.0, 0.2), ("10", 1.0, 0.0), ("01", 0.0, 0.3)],
        ),
    ]
}

fn weights(l: &Learner) -> Vec<(String, Vec<f32>)> {
    l.model
        .vars()
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect()
}

#[test]
fn two_ranks_match_one_process_step_for_step() {
    let seed = 5;
    let base = common::tiny_model(seed);
    let gs = groups(&base);
    let mut single = Learner::new(base, config(), 0);
    let mut single_loss = Vec::new();
    for _ in 0..2 {
        single_loss.push(single.step(&gs).unwrap().loss);
    }

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let gs1 = gs.clone();
    let rank1 = std::thread::spawn(move || {
        let c = TcpCollective::connect(addr, 1, 2).unwrap();
        let mut l =
            Learner::new(common::tiny_model(seed), config(), 0).with_collective(Box::new(c));
        let losses: Vec<f64> = (0..2).map(|_| l.step(&gs1).unwrap().loss).collect();
        (weights(&l), losses)
    });
    let c = TcpCollective::root(listener, 2).unwrap();
    let mut rank0 =
        Learner::new(common::tiny_model(seed), config(), 0).with_collective(Box::new(c));
    let losses0: Vec<f64> = (0..2).map(|_| rank0.step(&gs).unwrap().loss).collect();
    let (w1, losses1) = rank1.join().unwrap();
    let (w0, ws) = (weights(&rank0), weights(&single));
    let mut max_diff = 0f32;
    for (((n0, a), (n1, b)), (ns, c)) in w0.iter().zip(&w1).zip(&ws) {
        assert!(n0 == n1 && n0 == ns);
        assert_eq!(a, b, "ranks diverged on {n0}");
        for (x, y) in a.iter().zip(c) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    assert!(
        max_diff < 1e-5,
        "data-parallel weights differ from one process by {max_diff}"
    );
    for ((l0, l1), ls) in losses0.iter().zip(&losses1).zip(&single_loss) {
        assert_eq!(l0, l1);
        assert!((l0 - ls).abs() < 1e-5, "loss {l0} vs one process {ls}");
    }
    assert_ne!(
        w0,
        weights(&Learner::new(common::tiny_model(seed), config(), 0)),
        "the step must change the weights"
    );
}
