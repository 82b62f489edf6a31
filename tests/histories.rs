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

use common::history::{Installation, Model, Op, REGIONS, build_file};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the histories of this process did, printed at the end (the soak script adds
/// them up): histories, operations, complete runs, killed runs, runs with faults, and the
/// faults injected by kind (before, after, delay, pause).
static TOTALS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
const HISTORIES: usize = 0;
const OPERATIONS: usize = 1;
const RUNS: usize = 2;
const KILLED: usize = 3;
const FAULTY: usize = 4;
const FAULTS: usize = 5;

fn add(i: usize, n: u64) {
    TOTALS[i].fetch_add(n, Ordering::Relaxed);
}

/// Adds up the `injected faults: before=N after=N delay=N pause=N` line of a run.
fn add_faults(stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    let Some(line) = text.lines().find_map(|l| l.split_once("injected faults: ").map(|(_, rest)| rest.to_string()))
    else {
        return;
    };
    for (i, part) in line.split_whitespace().enumerate().take(4) {
        add(FAULTS + i, part.split_once('=').and_then(|(_, n)| n.parse().ok()).unwrap_or(0));
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..REGIONS.len(), 1..7u64, prop::bool::weighted(0.35), prop::bool::weighted(0.1), 0..5u8).prop_map(
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
fn killed_run(sb: &dyn Installation, delay: Duration) {
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

/// Applies one history to a fresh installation and the model; compares after every run.
fn check(sb: &dyn Installation, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut ops = ops.to_vec();
    ops.push(Op::Run);
    add(HISTORIES, 1);
    add(OPERATIONS, ops.len() as u64);
    for (step, op) in ops.iter().enumerate() {
        let names = model.object_names();
        let pick = |i: usize| (!names.is_empty()).then(|| names[i % names.len()].clone());
        let compare = match op {
            Op::Upload { region, seq, kind_full, other_date, variant } => {
                let (name, text) = build_file(REGIONS[*region], *seq, *kind_full, *other_date, *variant);
                sb.write(&name, &text);
                model.write(&name, text);
                false
            }
            Op::Touch { pick: i } => {
                if let Some(name) = pick(*i) {
                    sb.touch(&name);
                    model.touch(&name);
                }
                false
            }
            Op::Delete { pick: i } => {
                if let Some(name) = pick(*i) {
                    sb.delete(&name);
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
                let faults = format!("seed={seed},rate=0.15,{}", sb.fault_kinds());
                let out = sb.command(&["run", "--once"]).env("ESR_INGEST_FAULTS", &faults).output().expect("spawn");
                add(FAULTY, 1);
                add_faults(&out.stderr);
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
                killed_run(sb, Duration::from_millis(*delay_ms));
                add(KILLED, 1);
                let out = sb.run(&["run", "--once"]);
                prop_assert!(out.status.success(), "step {}: run --once after a kill failed\n{}", step, describe(&out));
                model.run();
                true
            }
        };
        if compare {
            add(RUNS, 1);
            let differences = model.differences(sb, sb.per_step_store());
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

/// Runs the configured number of histories, each in a fresh installation.
fn run_histories(fresh: impl Fn() -> Box<dyn Installation>, default_cases: u64) {
    let seed = env_number("ESR_HISTORY_SEED", 1);
    let cases = env_number("ESR_HISTORY_CASES", default_cases) as u32;
    let steps = env_number("ESR_HISTORY_STEPS", 24) as usize;
    let config = Config { cases, max_shrink_iters: 256, failure_persistence: None, ..Config::default() };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let result = runner.run(&history(steps), |ops| check(fresh().as_ref(), &ops));
    let t: Vec<u64> = TOTALS.iter().map(|t| t.load(Ordering::Relaxed)).collect();
    eprintln!(
        "history totals: histories={} operations={} runs={} killed={} faulty_runs={} faults_before={} faults_after={} faults_delay={} faults_pause={}",
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]
    );
    if let Err(e) = result {
        panic!(
            "history seed {seed} (ESR_HISTORY_SEED={seed} ESR_HISTORY_CASES={cases} ESR_HISTORY_STEPS={steps}) failed:\n{e}"
        );
    }
}

#[test]
fn embedded_histories_match_the_model() {
    run_histories(|| Box::new(Sandbox::new()), 24);
}

#[test]
fn production_histories_match_the_model() {
    run_histories(|| Box::new(production::S3Installation::new()), 4);
}

/// The production path: an S3-compatible server, RabbitMQ and the MongoDB-wire store,
/// all started by `scripts/test.sh`.
mod production {
    use super::common::broker::{amqp_url, broker_config, mongo_uri, unique};
    use super::common::history::Installation;
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    pub struct S3Installation {
        dir: tempfile::TempDir,
        bucket: String,
        store: String,
        runtime: tokio::runtime::Runtime,
        client: aws_sdk_s3::Client,
        /// S3 fingerprints carry LastModified in whole seconds: an upload of the same
        /// bytes within the second of the last one would not be a new upload.
        last_put: Mutex<SystemTime>,
    }

    fn endpoint() -> String {
        std::env::var("ESR_TEST_S3_ENDPOINT")
            .expect("ESR_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh")
    }

    impl S3Installation {
        pub fn new() -> Self {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            let settings = esr_ingest::adapters::s3::S3Settings {
                endpoint: Some(endpoint()),
                region: Some("us-east-1".into()),
                force_path_style: true,
            };
            let client = runtime.block_on(esr_ingest::adapters::s3::client(&settings));
            let names = unique("esr-hist");
            let bucket = names.to_lowercase();
            runtime.block_on(client.create_bucket().bucket(&bucket).send()).expect("create the bucket");
            let dir = tempfile::tempdir().expect("a temp dir");
            // Short leases: a killed run holds its regions until they expire.
            let config = format!(
                "lease_ttl = \"2s\"\n{}[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\n",
                broker_config(&amqp_url(), &names, "records_per_message = 3\nconsumers = 1"),
                endpoint()
            );
            std::fs::write(dir.path().join("esr.toml"), config).expect("write the config");
            let store = format!("{}/{}", mongo_uri().trim_end_matches('/'), names.replace('-', "_"));
            Self { dir, bucket, store, runtime, client, last_put: Mutex::new(SystemTime::UNIX_EPOCH) }
        }

        fn put(&self, name: &str, bytes: Vec<u8>) {
            let mut last = self.last_put.lock().expect("the clock");
            let next_second = |t: SystemTime| {
                let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs + 1)
            };
            let due = next_second(*last);
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                std::thread::sleep(wait + Duration::from_millis(20));
            }
            let put =
                self.client.put_object().bucket(&self.bucket).key(format!("drop/{name}")).body(bytes.into()).send();
            self.runtime.block_on(put).expect("upload");
            *last = SystemTime::now();
        }

        fn get(&self, name: &str) -> Vec<u8> {
            let got =
                self.runtime.block_on(self.client.get_object().bucket(&self.bucket).key(format!("drop/{name}")).send());
            let body = got.expect("download").body;
            self.runtime.block_on(body.collect()).expect("read the body").into_bytes().to_vec()
        }
    }

    impl Installation for S3Installation {
        fn write(&self, name: &str, text: &str) {
            self.put(name, text.as_bytes().to_vec());
        }
        fn touch(&self, name: &str) {
            let bytes = self.get(name);
            self.put(name, bytes);
        }
        fn delete(&self, name: &str) {
            let delete = self.client.delete_object().bucket(&self.bucket).key(format!("drop/{name}")).send();
            self.runtime.block_on(delete).expect("delete");
        }
        fn per_step_store(&self) -> bool {
            true
        }
        /// A pause longer than the lease (2 s) too: the paused run's commits must be
        /// fenced off once another claim of the region could have happened.
        fn fault_kinds(&self) -> String {
            "kinds=before+after+delay+pause,pause_ms=2500".into()
        }
        fn command(&self, args: &[&str]) -> std::process::Command {
            let mut cmd = std::process::Command::new(super::common::bin());
            cmd.current_dir(self.dir.path())
                .args(["--config", "esr.toml", "--store", &self.store])
                .arg("--source")
                .arg(format!("s3://{}/drop/", self.bucket))
                .args(args)
                .env_remove("ESR_INGEST_CONFIG");
            cmd
        }
    }
}
