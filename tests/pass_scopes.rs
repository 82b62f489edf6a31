//! Passes that look at less than everything end where full passes end.
//!
//! Random histories of arrivals, uploads again (same or other content) and deletions
//! reach a folder read by the "scoped" engine, which runs, as the service does, a full
//! pass first and then quick passes (new names and active files only) or passes over the
//! keys notified (some notifications lost; keys of a pass with deferred files looked at
//! again; a new region asks for a full pass at once). A second engine runs only full
//! passes over a mirror folder that receives each upload when the scoped engine can see
//! it (the model of what each scope sees is [`visibility`]). After the reconcile (every
//! upload shown, full passes on both), both stores must hold the same records, ledger
//! and streams: a scoped pass judges what it sees as a full pass would, and what it
//! cannot see only waits for the next full pass.
//!
//! The streams' starts are configured: without, a region's baseline is the lowest SEQ of
//! the first pass that sees it, so any delay in seeing a first file (a lost notification
//! as much as a slow upload) may give another, equally right, baseline. That a pass over
//! notified keys never sets a baseline is a test of its own.

mod common;

use common::engine::*;
use common::{file_text, por};
use esr_ingest::engine::{Engine, Scope};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
enum Step {
    /// Writes file `file` with content variant `variant` (a first arrival or an upload
    /// again); `notified` says whether its notification arrives.
    Write { file: usize, variant: u8, notified: bool },
    /// Removes the file, if it is there, until the end of the history (a file that was
    /// there only between two passes may be seen by one engine and not the other).
    Delete { file: usize },
    /// A pass: the scoped engine runs a quick pass when `quick`, else a pass over the
    /// keys notified since its last pass.
    Pass { quick: bool },
}

/// (region, SEQ) of the files a history may use; two regions, so one starts late. A
/// file's date is its place here, so no two files share a version.
const FILES: [(&str, u64); 10] = [
    ("SEV", 1),
    ("SEV", 2),
    ("SEV", 3),
    ("SEV", 4),
    ("SEV", 5),
    ("WES", 3),
    ("WES", 4),
    ("WES", 5),
    ("WES", 6),
    ("SEV", 7),
];

fn name(file: usize) -> String {
    let (region, seq) = FILES[file];
    format!("DE_{region}_RMC_202207{:02}_{seq:08}.DAT", 10 + file)
}

/// A file's text: records of a few keys its region's files share, so versions decide
/// (regions are driven side by side, so keys shared across regions would make the counts
/// of applied and stale lines depend on timing).
fn text(file: usize, variant: u8) -> String {
    let (region, seq) = FILES[file];
    let base = if region == "SEV" { 1 } else { 11 };
    let lines: Vec<String> = (0..3)
        .map(|i| por(base + (seq + i + u64::from(variant)) % 5, "C", &format!("T{file}-{variant}-{i}")))
        .collect();
    file_text(region, "RMC", &format!("202207{:02}", 10 + file), seq, &lines)
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..FILES.len(), 0u8..2, proptest::bool::weighted(0.75))
            .prop_map(|(file, variant, notified)| Step::Write { file, variant, notified }),
        1 => (0..FILES.len()).prop_map(|file| Step::Delete { file }),
        3 => any::<bool>().prop_map(|quick| Step::Pass { quick }),
    ]
}

/// Everything the two stores must agree on: the export, and per file its state, content
/// and whether it counts as applied; per stream the SEQ expected next; the counters
/// (files applied, duplicates, records by outcome).
async fn end_state(engine: &Engine) -> (Vec<String>, Vec<String>, Vec<String>) {
    let snapshot = engine.store.snapshot().await.unwrap();
    let mut ledger: Vec<String> = snapshot
        .ledger
        .iter()
        .map(|e| {
            format!("{} {:?} {:?} counted={} conflict={}", e.name, e.state, e.sha256, e.counted, e.conflict.is_some())
        })
        .collect();
    ledger.sort();
    let mut streams: Vec<String> = snapshot.streams.iter().map(|s| format!("{} {:?}", s.region, s.next_seq)).collect();
    streams.sort();
    streams.push(format!("{:?}", engine.store.counts().await.unwrap()));
    (export_lines(engine.store.as_ref()).await, ledger, streams)
}

/// Each stream's SEQ expected next.
async fn streams(engine: &Engine) -> Vec<(String, Option<u64>)> {
    let mut streams: Vec<_> =
        engine.store.snapshot().await.unwrap().streams.into_iter().map(|s| (s.region, s.next_seq)).collect();
    streams.sort();
    streams
}

/// A fresh folder to read, in a temporary directory that also holds the store.
fn an_inbox() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    (dir, inbox)
}

async fn pass(engine: &Engine, scope: &Scope) -> esr_ingest::engine::PassReport {
    engine.pass_over(scope, &CancellationToken::new()).await.expect("a pass")
}

fn write(inbox: &Path, file: usize, variant: u8, clock: &mut u64) {
    let path = inbox.join(name(file));
    std::fs::write(&path, text(file, variant)).unwrap();
    *clock += 10; // every upload gets a later modification time, as a real one would
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + *clock);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(at).unwrap();
}

/// The two folders: the one the scoped engine reads, and a mirror for the full engine
/// that receives each upload once the scoped engine can see it.
struct World {
    inbox: PathBuf,
    mirror: PathBuf,
    clock: u64,
    /// Files there now, by content variant.
    there: BTreeMap<usize, u8>,
    /// Uploads the scoped engine cannot see yet (not in the mirror).
    unseen: BTreeMap<usize, u8>,
    /// Files removed, restored at the end.
    removed: BTreeMap<usize, u8>,
}

impl World {
    fn upload(&mut self, file: usize, variant: u8) {
        write(&self.inbox, file, variant, &mut self.clock);
        self.there.insert(file, variant);
        self.unseen.insert(file, variant);
        self.removed.remove(&file);
    }

    fn remove(&mut self, file: usize) {
        if let Some(variant) = self.there.remove(&file) {
            std::fs::remove_file(self.inbox.join(name(file))).unwrap();
            let _ = std::fs::remove_file(self.mirror.join(name(file)));
            self.unseen.remove(&file);
            self.removed.insert(file, variant);
        }
    }

    /// Hands the mirror every unseen upload `visible` lets through.
    fn show(&mut self, visible: impl Fn(&str) -> bool) {
        let shown: Vec<(usize, u8)> =
            self.unseen.iter().filter(|(f, _)| visible(&name(**f))).map(|(f, v)| (*f, *v)).collect();
        for (file, variant) in shown {
            write(&self.mirror, file, variant, &mut self.clock);
            self.unseen.remove(&file);
        }
    }
}

/// What the scoped engine sees of an upload in a pass over `scope`: a full pass, all; a
/// quick one, all but those of settled names; one over keys, those notified and those of
/// the files a pass may work on (reading one finds it changed or gone).
async fn visibility(engine: &Engine, scope: &Scope) -> impl Fn(&str) -> bool + use<> {
    let ledger = engine.store.active().await.unwrap().ledger;
    let workable: BTreeSet<String> = ledger.iter().filter(|e| e.awaits_a_pass()).map(|e| e.name.clone()).collect();
    let active: BTreeSet<String> = ledger.into_iter().map(|e| e.name).collect();
    let known: BTreeSet<String> = engine.store.known_names().await.unwrap().into_iter().map(|k| k.name).collect();
    let scope = scope.clone();
    move |name: &str| match &scope {
        Scope::Full => true,
        Scope::Quick => !known.contains(name) || active.contains(name),
        Scope::Keys(keys) => keys.iter().any(|k| k == name) || workable.contains(name),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn quick_and_notified_passes_end_where_full_passes_end(steps in proptest::collection::vec(arb_step(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, mirror) = (dir.path().join("inbox"), dir.path().join("mirror"));
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&mirror).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let engine = |folder: &Path, db: &str| {
            let mut engine = rt.block_on(embedded_engine(folder, &dir.path().join(db)));
            engine.rules.start = [("SEV".to_string(), 1), ("WES".to_string(), 3)].into();
            engine
        };
        let (full, scoped) = (engine(&mirror, "full.db"), engine(&inbox, "scoped.db"));
        let mut world = World {
            inbox, mirror, clock: 0, there: BTreeMap::new(), unseen: BTreeMap::new(), removed: BTreeMap::new(),
        };
        let (mut notified, mut first) = (BTreeSet::new(), true);
        for step in &steps {
            match step {
                Step::Write { file, variant, notified: arrives } => {
                    world.upload(*file, *variant);
                    if *arrives {
                        notified.insert(name(*file));
                    }
                }
                Step::Delete { file } => world.remove(*file),
                Step::Pass { quick } => {
                    // The service's first pass is a full one.
                    let scope = match (first, quick) {
                        (true, _) => Scope::Full,
                        (false, true) => Scope::Quick,
                        (false, false) => Scope::Keys(std::mem::take(&mut notified).into_iter().collect()),
                    };
                    first = false;
                    world.show(rt.block_on(visibility(&scoped, &scope)));
                    rt.block_on(pass(&full, &Scope::Full));
                    let report = rt.block_on(pass(&scoped, &scope));
                    // Nothing here fails to read: only a pass over keys may find an active
                    // file it was not told about removed or uploaded again.
                    let told = |name: &str| match &scope {
                        Scope::Keys(keys) => keys.iter().any(|k| k == name),
                        _ => true,
                    };
                    prop_assert!(report.deferred.iter().all(|(name, _)| !told(name)), "{scope:?} deferred {:?}", report.deferred);
                    if let Scope::Keys(keys) = &scope
                        && !report.deferred.is_empty()
                    {
                        notified.extend(keys.iter().cloned());
                    }
                    if report.needs_full_listing {
                        world.show(|_| true);
                        rt.block_on(pass(&full, &Scope::Full));
                        rt.block_on(pass(&scoped, &Scope::Full));
                    }
                    // Having read all it was shown, the scoped engine is exactly as far on.
                    if report.deferred.is_empty() {
                        let (want, got) = (rt.block_on(streams(&full)), rt.block_on(streams(&scoped)));
                        prop_assert_eq!(got, want, "after a {:?} pass the streams differ", scope);
                    }
                }
            }
        }
        for (file, variant) in std::mem::take(&mut world.removed) {
            world.upload(file, variant); // back, as a new upload
        }
        world.show(|_| true);
        // The reconcile: a full pass on each (and a second, for what the first deferred).
        for _ in 0..2 {
            rt.block_on(pass(&full, &Scope::Full));
            rt.block_on(pass(&scoped, &Scope::Full));
        }
        let (want, got) = (rt.block_on(end_state(&full)), rt.block_on(end_state(&scoped)));
        prop_assert_eq!(&got.1, &want.1, "ledgers differ");
        prop_assert_eq!(&got.2, &want.2, "streams or counters differ");
        prop_assert_eq!(&got.0, &want.0, "exports differ");
    }
}

/// A pass over notified keys sees a region's files only in part, so it sets no baseline:
/// it asks for a full pass, which sets the lowest SEQ listed.
#[tokio::test]
async fn a_pass_over_notified_keys_leaves_a_new_regions_baseline_to_a_full_pass() {
    let (dir, inbox) = an_inbox();
    let engine = embedded_engine(&inbox, &dir.path().join("s.db")).await;
    pass(&engine, &Scope::Full).await;
    let mut clock = 0;
    write(&inbox, 7, 0, &mut clock); // WES 5, notified
    write(&inbox, 5, 0, &mut clock); // WES 3, its notification lost
    let report = pass(&engine, &Scope::Keys(vec![name(7)])).await;
    assert!(report.needs_full_listing, "a new region asks for a full pass");
    assert!(report.applied.is_empty(), "nothing applied without a baseline: {report:?}");
    let streams = engine.store.snapshot().await.unwrap().streams;
    assert!(streams.iter().all(|s| s.next_seq.is_none()), "no baseline saved: {streams:?}");
    let report = pass(&engine, &Scope::Full).await;
    assert!(!report.needs_full_listing);
    assert_eq!(report.applied, vec![name(5)], "the baseline is WES 3; WES 4 is awaited");
    let quick = pass(&engine, &Scope::Keys(vec![])).await;
    assert!(!quick.needs_full_listing, "a region with a baseline needs no full pass");
}

/// A pass over notified keys does not see a file whose notification was lost, so it never
/// judges a SEQ missing: an automatic skip that falls due asks for a full pass, which
/// finds the file and applies it in order.
#[tokio::test]
async fn a_pass_over_notified_keys_never_skips_a_seq_automatically() {
    let (dir, inbox) = an_inbox();
    let mut engine = embedded_engine(&inbox, &dir.path().join("s.db")).await;
    engine.rules.auto_skip_after = Some(chrono::TimeDelta::zero()); // due as soon as a SEQ is awaited
    let mut clock = 0;
    write(&inbox, 0, 0, &mut clock); // SEV 1
    assert_eq!(pass(&engine, &Scope::Full).await.applied, vec![name(0)]);
    write(&inbox, 2, 0, &mut clock); // SEV 3, notified
    write(&inbox, 1, 0, &mut clock); // SEV 2, its notification lost
    let report = pass(&engine, &Scope::Keys(vec![name(2)])).await;
    assert!(report.applied.is_empty(), "SEQ 2 was skipped from a partial view: {report:?}");
    assert!(report.needs_full_listing, "the skip that fell due asks for a full pass");
    assert_eq!(streams(&engine).await, vec![("SEV".to_string(), Some(2))]);
    let report = pass(&engine, &Scope::Full).await;
    assert_eq!(report.applied, vec![name(1), name(2)], "in SEQ order, nothing skipped");
}

/// A new region whose only file is gone again has nothing a baseline could come from: a
/// pass over notified keys does not ask for full passes over and over for it.
#[tokio::test]
async fn a_new_region_with_no_file_left_asks_for_no_full_pass() {
    let (dir, inbox) = an_inbox();
    let engine = embedded_engine(&inbox, &dir.path().join("s.db")).await;
    pass(&engine, &Scope::Full).await;
    let mut clock = 0;
    write(&inbox, 7, 0, &mut clock); // WES 5, notified
    assert!(pass(&engine, &Scope::Keys(vec![name(7)])).await.needs_full_listing);
    std::fs::remove_file(inbox.join(name(7))).unwrap();
    pass(&engine, &Scope::Full).await;
    let report = pass(&engine, &Scope::Keys(vec![])).await;
    assert!(!report.needs_full_listing, "{report:?}");
}

/// What a pass remembers of the known names between full passes can lack what another
/// process recorded meanwhile (a `run --once`, a second instance): a quick pass then reads
/// those names from the store instead of judging them new. Here the other instance runs a
/// newer configuration whose name pattern also accepts kind RMX (a rolling change): for
/// the service the name is a bad name with no SEQ to look it up by, so only reading it by
/// name keeps its applied entry from being quarantined.
#[tokio::test]
async fn a_quick_pass_judges_names_another_process_recorded_by_the_store() {
    let (dir, inbox) = an_inbox();
    let db = dir.path().join("s.db");
    let service = embedded_engine(&inbox, &db).await;
    pass(&service, &Scope::Full).await; // remembers the known names: none
    let mut clock = 0;
    write(&inbox, 0, 0, &mut clock); // SEV 1
    let widened = "DE_SEV_RMX_20220711_00000002.DAT";
    std::fs::write(inbox.join(widened), file_text("SEV", "RMX", "20220711", 2, &[por(1, "C", "X")])).unwrap();
    let mut other = embedded_engine(&inbox, &db).await;
    other.profile = esr_ingest::core::name::NameProfile::new(
        r"^DE_(?P<region>[A-Z]{3})_(?P<kind>RMC|RMF|RMX)_(?P<date>\d{8})_(?P<seq>\d{8})\.DAT$",
    )
    .unwrap();
    let report = pass(&other, &Scope::Full).await;
    assert_eq!(report.applied, vec![name(0), widened.to_string()], "{report:?}");
    let before = (end_state(&service).await, service.store.recent_audit(100).await.unwrap());
    let report = pass(&service, &Scope::Quick).await;
    assert!(report.applied.is_empty() && report.quarantined.is_empty(), "{report:?}");
    let after = (end_state(&service).await, service.store.recent_audit(100).await.unwrap());
    assert_eq!(after, before, "the quick pass judged again what the other instance recorded");
}

/// Only a listing that checked every object counts as the reconcile: a full pass, or a
/// pass over more notified keys than are looked up one by one (it lists in full, and reads
/// the known names from the store again rather than judge by what the engine remembers).
#[tokio::test]
async fn only_a_listing_of_everything_counts_as_the_reconcile() {
    let (dir, inbox) = an_inbox();
    let engine = embedded_engine(&inbox, &dir.path().join("s.db")).await;
    assert!(pass(&engine, &Scope::Full).await.listed_everything);
    assert!(!pass(&engine, &Scope::Quick).await.listed_everything);
    assert!(!pass(&engine, &Scope::Keys(vec![name(0)])).await.listed_everything);
    let many: Vec<String> = (0..=esr_ingest::engine::KEYS_AT_MOST).map(|i| format!("k{i}")).collect();
    assert!(pass(&engine, &Scope::Keys(many)).await.listed_everything);
}

/// Bad names and conflicts never settle, but they change only with an upload of their
/// own: however many pile up in the source, a pass over notified keys looks up the keys
/// and the files it may work on, and does not fall back to listing everything.
#[tokio::test]
async fn bad_names_piling_up_keep_a_pass_over_notified_keys_a_lookup() {
    let (dir, inbox) = an_inbox();
    let mut engine = embedded_engine(&inbox, &dir.path().join("s.db")).await;
    engine.rules.start = [("SEV".to_string(), 1)].into();
    for i in 0..=esr_ingest::engine::KEYS_AT_MOST {
        std::fs::write(inbox.join(format!("report-{i:03}.csv")), "not a batch file\n").unwrap();
    }
    let report = pass(&engine, &Scope::Full).await;
    assert!(report.listed_everything);
    let quarantined = engine.store.active().await.unwrap().ledger.len();
    assert!(quarantined > esr_ingest::engine::KEYS_AT_MOST, "{quarantined} bad names recorded");
    let mut clock = 0;
    write(&inbox, 0, 0, &mut clock);
    let report = pass(&engine, &Scope::Keys(vec![name(0)])).await;
    assert!(!report.listed_everything, "a pass over one notified key listed everything");
    assert_eq!(report.applied, vec![name(0)], "the notified file is applied: {report:?}");
}
