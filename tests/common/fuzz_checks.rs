#![allow(dead_code)]
//! The properties the fuzz targets check (`fuzz/fuzz_targets/`), shared with the corpus
//! replay test (`tests/fuzz_corpus.rs`) so CI checks every committed corpus input.

use esr_ingest::config::{ConfigFile, Overrides, Settings};
use esr_ingest::core::name::{FileName, NameProfile, NameVerdict, object_name};
use esr_ingest::core::parse::{FileParser, Line, ParseError};
use esr_ingest::core::schema::{KEY_JOIN, Layout, Verdict};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// Any object key: classified without a panic; a batch name keeps the contract's rules.
pub fn name(key: &str) {
    static PROFILE: OnceLock<NameProfile> = OnceLock::new();
    match PROFILE.get_or_init(NameProfile::default).classify(key) {
        NameVerdict::Batch(file) => {
            assert_eq!(file.name, object_name(key));
            assert_eq!(file.region.len(), 3);
            assert!(file.region.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(file.kind == "RMC" || file.kind == "RMF");
            assert!(file.seq > 0);
        }
        NameVerdict::Bad { reason, .. } => assert!(reason.starts_with("bad name:")),
        NameVerdict::Ignored => {}
    }
}

fn fixtures() -> &'static (FileName, Arc<Layout>) {
    static FIXTURES: OnceLock<(FileName, Arc<Layout>)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let NameVerdict::Batch(file) = NameProfile::default().classify("DE_SEV_RMC_20220730_00000001.DAT") else {
            panic!("the fixture name is valid")
        };
        (file, Arc::new(Layout::default_esr()))
    })
}

/// Any bytes as a batch file: the validation pass and the delivery pass agree (same fault,
/// or the same summary with one outcome per record line), line numbers increase, the
/// digest covers every byte, and nothing panics.
pub fn file(data: &[u8]) {
    let (file, layout) = fixtures();
    file_with(data, file, layout);
}

/// [`file`] under any layout.
pub fn file_with(data: &[u8], file: &FileName, layout: &Arc<Layout>) {
    let validation = FileParser::new(data, file, layout.clone()).validate().expect("reading a slice cannot fail");
    assert_eq!(validation.summary.sha256, hex::encode(Sha256::digest(data)));
    assert_eq!(validation.summary.size, data.len() as u64);

    // The validation pass that keeps the lines validates the same.
    let mut kept = Vec::new();
    let keeping = FileParser::new(data, file, layout.clone())
        .validate_keeping(true, |line| kept.push(line))
        .expect("reading a slice cannot fail");
    assert_eq!(keeping, validation);

    let mut parser = FileParser::new(data, file, layout.clone());
    let mut outcomes = 0u64;
    let mut last_line = 0u64;
    let mut read = Vec::new();
    let delivered = loop {
        match parser.next_line() {
            Ok(Some(line)) => {
                read.push(line.clone());
                outcomes += 1;
                let number = match &line {
                    Line::Record(r) => r.version.line,
                    Line::Reject(r) => r.line,
                    Line::Ignored { line, .. } => *line,
                };
                assert!(number > last_line, "line numbers increase: {number} after {last_line}");
                last_line = number;
            }
            Ok(None) => break parser.finish(),
            Err(e) => break Err(e),
        }
    };
    match (&validation.fault, delivered) {
        (None, Ok(summary)) => {
            assert_eq!(summary, validation.summary);
            assert_eq!(outcomes, summary.record_lines);
            assert_eq!(kept, read, "the lines kept by validation are the lines read again");
        }
        (Some(fault), Err(ParseError::Fault(found))) => assert_eq!(fault, &found),
        (fault, other) => panic!("the validation pass said {fault:?}, the delivery pass {other:?}"),
    }
}

/// Any text as a layout file: loaded or refused, never a panic; a loaded layout checks
/// any line without a panic.
/// Any text as a layout, any line checked against it: a layout or a clear error, a
/// verdict for the line, a key for a record; and the line's bytes as a whole file under
/// the layout hold the file properties (its separator, quoting, header and trailer).
pub fn layout(text: &str, fields: &[&str]) {
    if let Ok(layout) = Layout::from_toml(text) {
        if let Ok(Verdict::Record(checked)) = layout.check(fields) {
            let key = checked.layout.key_of(fields);
            let parts = checked.layout.key.len();
            if parts > 1 {
                // a part holding the joint is rejected, so the parts can be told apart
                assert_eq!(key.matches(KEY_JOIN).count(), parts - 1, "{key:?}");
            }
        }
        let (file, _) = fixtures();
        let separator = char::from(layout.separator).to_string();
        file_with(fields.join(&separator).as_bytes(), file, &Arc::new(layout));
    }
}

/// A layout fuzz input: the layout's text, a NUL byte, then one line of fields.
pub fn layout_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (layout_text, line) = text.split_once('\0').unwrap_or((&text, ""));
    let fields: Vec<&str> = line.split(',').collect();
    layout(layout_text, &fields);
}

/// Any text as a configuration file: settings or a clear error, never a panic.
pub fn config(text: &str) {
    if let Ok(file) = toml::from_str::<ConfigFile>(text) {
        let _ = Settings::from_file(file, Overrides::default());
    }
}
