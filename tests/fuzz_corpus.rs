//! The fuzz targets' properties (`common::fuzz_checks`) on every committed corpus input
//! (`fuzz/corpus/`, grown by `scripts/fuzz.sh`), and on a few thousand generated inputs
//! made of the file format's own pieces: the fuzzing smoke that CI runs.

mod common;

use common::fuzz_checks;
use proptest::prelude::*;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = common::project_root().join("fuzz/corpus").join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "the {target} corpus is empty");
    inputs
}

/// Runs `check` on every input, reporting which one failed.
fn replay(target: &str, check: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes))).is_err() {
            panic!("{target}: the corpus input {} breaks the property", path.display());
        }
    }
}

#[test]
fn the_file_parser_corpus_holds() {
    replay("file_parser", fuzz_checks::file);
}

#[test]
fn the_name_corpus_holds() {
    replay("name_parser", |b| {
        if let Ok(key) = std::str::from_utf8(b) {
            fuzz_checks::name(key);
        }
    });
}

#[test]
fn the_layout_corpus_holds() {
    replay("layout_loader", fuzz_checks::layout_input);
}

#[test]
fn the_config_corpus_holds() {
    replay("config_loader", |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            fuzz_checks::config(text);
        }
    });
}

/// Pieces of the format (and of its faults) that random files are made of.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"HDR,RMC,SEV,20220730,00000001".to_vec()),
        Just(b"POR,100,,C,42,Staff Nurse,DPN1,SEV,Y,RA7,1234,Org,Loc".to_vec()),
        Just(b"POS,200,,D,,,,,,,,,,,,".to_vec()),
        Just(b"TRL,1".to_vec()),
        Just(b"TRL,2".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\"\"".to_vec()),
        Just(b",".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b"\0".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_files_hold(pieces in prop::collection::vec(piece(), 0..40)) {
        fuzz_checks::file(&pieces.concat());
    }

    #[test]
    fn generated_names_hold(key in "[A-Za-z0-9_./ ]{0,40}|DE_[A-Z]{2,4}_RM[CFX]_[0-9]{8}_[0-9]{7,9}\\.DAT") {
        fuzz_checks::name(&key);
    }
}
