//! Model-based random histories against the real binary (see `common::history`): uploads,
//! identical and changed re-uploads, second claimants of a SEQ, deletes, operator skips,
//! runs and runs killed with SIGKILL at a random moment. After every complete run the
//! binary's `export`, `status` and counters must equal the model's.
//!
//! CI runs a fixed set of seeds; `scripts/soak-histories.sh` runs fresh seeds for a given
//! time. A failure prints its seed and the shrunk history. Environment:
//! `ESR_HISTORY_SEED` (default 1), `ESR_HISTORY_CASES` (histories per test, default 24),
//! `ESR_HISTORY_STEPS` (operations at most per history, default 24).

mod common;

use common::history::{Model, Op, REGIONS, build_file};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::time::Duration;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..REGIONS.len(), 1..7u64, prop::bool::weighted(0.15), prop::bool::weighted(0.1), 0..5u8).prop_map(
            |(region, seq, kind_full, other_date, variant)| Op::Upload { region, seq, kind_full, other_date, variant }
        ),
        2 => any::<usize>().prop_map(|pick| Op::Touch { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        1 => (0..REGIONS.len(), 1..8u64).prop_map(|(region, seq)| Op::Skip { region, seq }),
        3 => Just(Op::Run),
        1 => (0..120u64).prop_map(|delay_ms| Op::KillRun { delay_ms }),
        2 => any::<u64>().prop_map(|seed| Op::FaultyRun { seed }),
    ]
}

fn history(steps: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=steps)
}

/// Runs `run --once`, kills it after `delay`, and lets it be; the caller runs again.
fn killed_run(sb: &Sandbox, delay: Duration) {
    let mut child = sb
        .command(&["run", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

/// Applies one history to a fresh sandbox and the model; compares after every run.
fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let sb = Sandbox::new();
    let mut model = Model::default();
    let mut ops = ops.to_vec();
    ops.push(Op::Run);
    for (step, op) in ops.iter().enumerate() {
        let names = model.object_names();
        let pick = |i: usize| (!names.is_empty()).then(|| names[i % names.len()].clone());
        let compare = match op {
            Op::Upload { region, seq, kind_full, other_date, variant } => {
                let (name, text) = build_file(REGIONS[*region], *seq, *kind_full, *other_date, *variant);
                sb.write_file(&name, &text);
                model.write(&name, text);
                false
            }
            Op::Touch { pick: i } => {
                if let Some(name) = pick(*i) {
                    sb.touch_newer(&name);
                    model.touch(&name);
                }
                false
            }
            Op::Delete { pick: i } => {
                if let Some(name) = pick(*i) {
                    std::fs::remove_file(sb.inbox.join(&name)).expect("delete");
                    model.delete(&name);
                }
                false
            }
            Op::Skip { region, seq } => {
                let out = sb.run(&[
                    "sequence",
                    "skip",
                    "--region",
                    REGIONS[*region],
                    "--seq",
                    &seq.to_string(),
                    "--reason",
                    "history",
                ]);
                let want = model.skip(REGIONS[*region], *seq);
                prop_assert_eq!(out.status.code(), Some(want), "step {}: {:?}\n{}", step, op, describe(&out));
                false
            }
            Op::Run => {
                let out = sb.run(&["run", "--once"]);
                prop_assert!(out.status.success(), "step {}: run --once failed\n{}", step, describe(&out));
                model.run();
                true
            }
            Op::FaultyRun { seed } => {
                let faults = format!("seed={seed},rate=0.15,kinds=before+after+delay");
                let out = sb.command(&["run", "--once"]).env("ESR_INGEST_FAULTS", &faults).output().expect("spawn");
                prop_assert!(
                    matches!(out.status.code(), Some(0 | 1))
                        && !String::from_utf8_lossy(&out.stderr).contains("panicked"),
                    "step {}: run --once with faults ({}) ended badly\n{}",
                    step,
                    faults,
                    describe(&out)
                );
                let out = sb.run(&["run", "--once"]);
                prop_assert!(out.status.success(), "step {}: run --once after faults failed\n{}", step, describe(&out));
                model.run();
                true
            }
            Op::KillRun { delay_ms } => {
                killed_run(&sb, Duration::from_millis(*delay_ms));
                let out = sb.run(&["run", "--once"]);
                prop_assert!(out.status.success(), "step {}: run --once after a kill failed\n{}", step, describe(&out));
                model.run();
                true
            }
        };
        if compare {
            let differences = model.differences(&sb);
            prop_assert!(
                differences.is_empty(),
                "step {} ({:?}): the binary differs from the model:\n  {}",
                step,
                op,
                differences.join("\n  ")
            );
        }
    }
    Ok(())
}

#[test]
fn embedded_histories_match_the_model() {
    let seed = env_number("ESR_HISTORY_SEED", 1);
    let cases = env_number("ESR_HISTORY_CASES", 24) as u32;
    let steps = env_number("ESR_HISTORY_STEPS", 24) as usize;
    let config = Config { cases, max_shrink_iters: 256, failure_persistence: None, ..Config::default() };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    if let Err(e) = runner.run(&history(steps), |ops| check(&ops)) {
        panic!(
            "history seed {seed} (ESR_HISTORY_SEED={seed} ESR_HISTORY_CASES={cases} ESR_HISTORY_STEPS={steps}) failed:\n{e}"
        );
    }
}
