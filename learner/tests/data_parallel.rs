//! Data-parallel ranks on loopback take exactly the step one process takes: two ranks driven
//! by hand, and three driven by `Replicas` (the `--gpus N` driver) from one thread each.

mod common;

use learner::collective::TcpCollective;
use learner::replicas::Replicas;
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

#[test]
fn three_replicas_take_the_step_one_process_takes() {
    let seed = 7;
    let base = common::tiny_model(seed);
    let gs = groups(&base);
    let mut single = Learner::new(base, config(), 0);
    let single_reports: Vec<_> = (0..2).map(|_| single.step(&gs).unwrap()).collect();

    let world = 3;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Ranks 1 and 2 connect while rank 0 accepts; they start from other weights on purpose:
    // forming the group must give them rank 0's.
    let joiners: Vec<_> = (1..world)
        .map(|rank| {
            std::thread::spawn(move || {
                let c = TcpCollective::connect(addr, rank, world).unwrap();
                Learner::new(common::tiny_model(seed + rank as u64), config(), 0)
                    .with_collective(Box::new(c))
            })
        })
        .collect();
    let root = TcpCollective::root(listener, world).unwrap();
    let others: Vec<Learner> = joiners.into_iter().map(|j| j.join().unwrap()).collect();
    let primary =
        Learner::new(common::tiny_model(seed), config(), 0).with_collective(Box::new(root));
    let mut replicas = Replicas::spawn(primary, others).unwrap();
    assert_eq!(replicas.world_size(), 3);
    for expected in &single_reports {
        let r = replicas.step(&gs).unwrap();
        assert_eq!(r.version, expected.version);
        assert!(
            (r.loss - expected.loss).abs() < 1e-5,
            "{} vs {}",
            r.loss,
            expected.loss
        );
    }
    let (wr, ws) = (weights(replicas.primary()), weights(&single));
    let max_diff = wr
        .iter()
        .zip(&ws)
        .flat_map(|((_, a), (_, b))| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-5,
        "replicas differ from one process by {max_diff}"
    );
}

#[test]
fn replicas_refuse_a_group_of_the_wrong_shape() {
    let seed = 3;
    let lone = Learner::new(common::tiny_model(seed), config(), 0);
    let other = Learner::new(common::tiny_model(seed), config(), 0);
    // Rank 0 of a group of one cannot drive a second rank.
    let err = Replicas::spawn(lone, vec![other]).err().expect("refused");
    assert!(err.to_string().contains("rank 0 of 2"), "{err}");
}
