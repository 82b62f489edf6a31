//! Synthetic files in the default profile (`esr-ingest generate`).
//!
//! Deterministic for a seed: the same arguments always write the same bytes. Each region
//! gets its own SEQ run and its own range of position ids; later days update and
//! occasionally delete positions of earlier days, so the version rule has work to do.

use chrono::{Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub const DEFAULT_REGIONS: [&str; 13] =
    ["SEV", "WES", "WMD", "YHD", "EMD", "EOE", "MER", "LDN", "OXF", "NTH", "NWN", "PEN", "KSS"];

#[derive(Clone, Debug)]
pub struct GenerateSpec {
    pub regions: Vec<String>,
    pub days: u32,
    pub start: NaiveDate,
    pub records: u64,
    pub seed: u64,
}

const TITLES: [&str; 10] = [
    "Staff Nurse",
    "Senior Staff Nurse",
    "Healthcare Assistant",
    "Consultant Physician",
    "Specialty Registrar",
    "Nurse, Band 5",
    "Physiotherapist",
    "Pharmacist, Band 7",
    "Ward Manager",
    "Foundation Doctor FY1",
];
const AREAS: [&str; 5] = ["Acute Medicine", "Emergency Department", "Paediatrics", "Surgery, General", "Radiology"];
const GRADES: [(&str, &str, &str); 4] =
    [("B5", "XN05", "Band 5"), ("B6", "XN06", "Band 6"), ("B7", "XN07", "Band 7"), ("MC", "MC72", "Consultant")];

fn quoted(s: &str) -> String {
    if s.contains(',') { format!("\"{s}\"") } else { s.to_string() }
}

fn region_seed(seed: u64, region: &str) -> u64 {
    region
        .bytes()
        .fold(seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| h.rotate_left(7) ^ u64::from(b).wrapping_mul(0x100_0000_01B3))
}

/// Writes `days` files per region into `out`; returns their paths.
pub fn generate(out: &Path, spec: &GenerateSpec) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    for (index, region) in spec.regions.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(region_seed(spec.seed, region));
        let first_seq: u64 = rng.random_range(1_000..9_000);
        let id_base = (index as u64 + 1) * 10_000_000;
        let pool = (spec.records * 2).max(10);
        for day in 0..spec.days {
            let date = spec.start + Duration::days(i64::from(day));
            let seq = first_seq + u64::from(day);
            let kind = if day == 0 { "RMF" } else { "RMC" };
            let name = format!("DE_{region}_{kind}_{}_{seq:08}.DAT", date.format("%Y%m%d"));
            let path = out.join(&name);
            let tmp = out.join(format!(".{name}.part"));
            {
                let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
                writeln!(w, "HDR,{kind},{region},{},{seq:08}", date.format("%Y%m%d"))?;
                for _ in 0..spec.records {
                    let id = id_base + rng.random_range(0..pool);
                    write_record(&mut w, &mut rng, region, id)?;
                }
                writeln!(w, "TRL,{}", spec.records)?;
                w.flush()?;
            }
            std::fs::rename(&tmp, &path)?; // appears complete, never half-written
            written.push(path);
        }
    }
    Ok(written)
}

fn write_record(w: &mut impl Write, rng: &mut ChaCha8Rng, region: &str, id: u64) -> io::Result<()> {
    let delete = rng.random_ratio(1, 50);
    let is_por = rng.random_bool(0.5);
    let indicator = if delete { "D" } else { "C" };
    if delete {
        return if is_por { writeln!(w, "POR,{id},,D,,,,,,,,,") } else { writeln!(w, "POS,{id},,D,,,,,,,,,,,,") };
    }
    let title = quoted(TITLES[rng.random_range(0..TITLES.len())]);
    let number: u32 = rng.random_range(1..9_999_999);
    let ods = format!("R{}{}", (b'A' + rng.random_range(0..26u8)) as char, rng.random_range(1..9));
    if is_por {
        writeln!(
            w,
            "POR,{id},,{indicator},{number},{title},{region}/{number}/{}/001,{region},Y,{ods},{:04},{ods} {region} NHS Trust,{region} Hospital Site {}",
            rng.random_range(100..999),
            rng.random_range(0..10_000),
            rng.random_range(1..20)
        )
    } else {
        let (trust, payscale, desc) = GRADES[rng.random_range(0..GRADES.len())];
        let area = quoted(AREAS[rng.random_range(0..AREAS.len())]);
        writeln!(
            w,
            "POS,{id},,{indicator},{number},{title},N{:04},{area},,{region}/{number},{region},{ods},{trust},{payscale},{desc},{ods}{:03}",
            rng.random_range(0..10_000),
            rng.random_range(0..1000)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::name::{NameProfile, NameVerdict};
    use crate::core::parse::FileParser;
    use crate::core::schema::Layout;
    use std::sync::Arc;

    #[test]
    fn generated_files_are_valid_and_deterministic() {
        let spec = GenerateSpec {
            regions: vec!["SEV".into(), "WES".into()],
            days: 2,
            start: NaiveDate::from_ymd_opt(2022, 7, 29).unwrap(),
            records: 300,
            seed: 3,
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let files = generate(a.path(), &spec).unwrap();
        generate(b.path(), &spec).unwrap();
        assert_eq!(files.len(), 4);
        let layout = Arc::new(Layout::default_esr());
        for path in files {
            let name = path.file_name().unwrap().to_str().unwrap();
            let NameVerdict::Batch(f) = NameProfile::default().classify(name) else { panic!("{name}") };
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes, std::fs::read(b.path().join(name)).unwrap());
            let mut p = FileParser::new(&bytes[..], &f, layout.clone());
            while let Some(line) = p.next_line().unwrap() {
                assert!(matches!(line, crate::core::parse::Line::Record(_)), "{line:?}");
            }
            assert_eq!(p.finish().unwrap().record_lines, 300);
        }
    }
}
