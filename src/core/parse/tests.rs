use super::*;
use crate::core::name::{NameProfile, NameVerdict};

const POR: &str = "POR,100,,C,42,Staff Nurse,DPN1,SEV,Y,RA7,1234,Org,Loc";
const POS: &str = "POS,200,,C,7,\"Nurse, Band 5\",N1,Ward,,DPN2,SEV,RA7,B5,XN05,Band 5,WK1";

fn name(n: &str) -> FileName {
    match NameProfile::default().classify(n) {
        NameVerdict::Batch(f) => f,
        other => panic!("{other:?}"),
    }
}

fn parse(content: &[u8]) -> (Vec<Line>, Result<FileSummary, ParseError>) {
    let f = name("DE_SEV_RMC_20220730_00001157.DAT");
    let mut p = FileParser::new(content, &f, Arc::new(Layout::default_esr()));
    let mut lines = Vec::new();
    loop {
        match p.next_line() {
            Ok(Some(l)) => lines.push(l),
            Ok(None) => break,
            Err(e) => return (lines, Err(e)),
        }
    }
    (lines, p.finish())
}

fn fault(content: &str) -> FileFault {
    match parse(content.as_bytes()).1 {
        Err(ParseError::Fault(f)) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn parses_records_with_versions_and_quoted_commas() {
    let text = format!("HDR,RMC,SEV,20220730,00001157\n{POR}\n\n{POS}\nTRL,2\n");
    let (lines, summary) = parse(text.as_bytes());
    let summary = summary.unwrap();
    assert_eq!(summary.record_lines, 2);
    assert_eq!(summary.size, text.len() as u64);
    let Line::Record(por) = &lines[0] else { panic!() };
    assert_eq!((por.version.seq, por.version.line), (1157, 2));
    let Line::Record(pos) = &lines[1] else { panic!() };
    assert_eq!(pos.version.line, 4, "blank lines count as physical lines");
    let fields = pos.fields.as_ref().unwrap().to_object_json().unwrap();
    assert!(fields.contains("\"position_title\":\"Nurse, Band 5\""), "{fields}");
}

#[test]
fn bom_and_crlf_are_accepted_and_the_hash_covers_raw_bytes() {
    let plain = format!("HDR,RMC,SEV,20220730,1157\r\n{POR}\r\nTRL,1\r\n");
    let with_bom = [BOM, plain.as_bytes()].concat();
    let (lines, summary) = parse(&with_bom);
    assert_eq!(lines.len(), 1);
    let s = summary.unwrap();
    assert_eq!(s.sha256, hex::encode(Sha256::digest(&with_bom)));
}

#[test]
fn file_level_faults() {
    assert_eq!(fault(""), FileFault::Empty);
    assert!(matches!(fault(&format!("{POR}\nTRL,1\n")), FileFault::MissingHeader { line: 1, .. }));
    assert!(matches!(fault("HDR,RMC,SEV\nTRL,0\n"), FileFault::GarbledHeader { .. }));
    assert!(matches!(fault("HDR,RMC,SEV,20220732,1157\nTRL,0\n"), FileFault::GarbledHeader { .. }));
    assert!(matches!(fault("HDR,RMF,SEV,20220730,1157\nTRL,0\n"), FileFault::HeaderMismatch { part: "kind", .. }));
    assert!(matches!(fault("HDR,RMC,WES,20220730,1157\nTRL,0\n"), FileFault::HeaderMismatch { part: "region", .. }));
    assert!(matches!(fault("HDR,RMC,SEV,20220731,1157\nTRL,0\n"), FileFault::HeaderMismatch { part: "date", .. }));
    assert!(matches!(fault("HDR,RMC,SEV,20220730,1158\nTRL,0\n"), FileFault::HeaderMismatch { part: "SEQ", .. }));
    assert!(matches!(fault(&format!("HDR,RMC,SEV,20220730,1157\n{POR}\n")), FileFault::MissingTrailer { .. }));
    assert_eq!(
        fault(&format!("HDR,RMC,SEV,20220730,1157\n{POR}\nTRL,2\n")),
        FileFault::TrailerCount { line: 3, declared: 2, found: 1 }
    );
    assert!(matches!(
        fault(&format!("HDR,RMC,SEV,20220730,1157\nTRL,0\n{POR}\n")),
        FileFault::AfterTrailer { line: 3 }
    ));
    assert!(matches!(fault("HDR,RMC,SEV,20220730,1157\nTRL,x\n"), FileFault::GarbledTrailer { .. }));
}

#[test]
fn over_long_lines_are_a_file_fault_not_unbounded_memory() {
    let long = "X".repeat(MAX_LINE_BYTES + 10);
    let f = fault(&format!("HDR,RMC,SEV,20220730,1157\n{long}\nTRL,1\n"));
    assert_eq!(f, FileFault::LineTooLong { line: 2 });
}

#[test]
fn line_level_faults_keep_line_numbers() {
    let mut text = b"HDR,RMC,SEV,20220730,1157\nXYZ,1,,C\nPOR,1,,C\n".to_vec();
    text.extend_from_slice(b"POR,1,,C,42,Bad \xff title,D,SEV,Y,RA7,1234,Org,Loc\n");
    text.extend_from_slice(format!("{POR}\nTRL,4\n").as_bytes());
    let (lines, summary) = parse(&text);
    assert_eq!(summary.unwrap().record_lines, 4);
    let rejects: Vec<(u64, &str)> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Reject(r) => Some((r.line, r.reason.as_str())),
            Line::Record(_) | Line::Ignored { .. } => None,
        })
        .collect();
    assert_eq!(rejects.len(), 3);
    assert!(rejects[0].1.contains("unknown record type") && rejects[0].0 == 2);
    assert!(rejects[1].1.contains("wrong field count") && rejects[1].0 == 3);
    assert!(rejects[2].1.contains("UTF-8") && rejects[2].0 == 4);
}

#[test]
fn validate_agrees_with_a_full_read() {
    let text = format!("HDR,RMC,SEV,20220730,1157\n{POR}\n{POS}\nTRL,2\n");
    let f = name("DE_SEV_RMC_20220730_00001157.DAT");
    let v = FileParser::new(text.as_bytes(), &f, Arc::new(Layout::default_esr())).validate().unwrap();
    assert_eq!(v.fault, None);
    assert_eq!(v.summary, parse(text.as_bytes()).1.unwrap());
}

#[test]
fn validate_hashes_a_faulty_file_to_its_end() {
    let f = name("DE_SEV_RMC_20220730_00001157.DAT");
    for text in [format!("{POR}\nTRL,1\n"), format!("HDR,RMC,SEV,20220730,1157\n{POR}\nTRL,5\n")] {
        let v = FileParser::new(text.as_bytes(), &f, Arc::new(Layout::default_esr())).validate().unwrap();
        assert!(v.fault.is_some());
        assert_eq!(v.summary.sha256, hex::encode(Sha256::digest(text.as_bytes())));
        assert_eq!(v.summary.size, text.len() as u64);
    }
}

#[test]
fn line_numbers_count_crlf_blank_runs_and_quoted_newlines() {
    let text = format!(
        "HDR,RMC,SEV,20220730,1157\r\n\r\n\r\n{POR}\r\nPOR,101,,C,42,\"Two\nlines\",D,SEV,Y,RA7,1234,Org,Loc\r\n\n{POS}\r\nTRL,3\r\n"
    );
    let (lines, summary) = parse(text.as_bytes());
    summary.unwrap();
    let numbers: Vec<u64> = lines
        .iter()
        .map(|l| match l {
            Line::Record(r) => r.version.line,
            Line::Reject(r) => panic!("{r:?}"),
            Line::Ignored { .. } => panic!("nothing is ignored"),
        })
        .collect();
    assert_eq!(numbers, vec![4, 5, 8]);
}

const PIPED: &str = r#"
name = "piped"
separator = "|"
quoting = false
header = false
trailer = false
indicator_field = "flag"
[[record]]
type = "ASG"
apply = false
[[record]]
type = "POS"
key = ["office", "position_id"]
[[record.field]]
name = "type"
format = "F(3)"
[[record.field]]
name = "office"
format = "X(3)"
[[record.field]]
name = "position_id"
format = "N(15)"
[[record.field]]
name = "flag"
format = "F(1)"
[[record.field]]
name = "title"
format = "X(40)"
"#;

#[test]
fn a_file_without_header_or_trailer_in_another_layout() {
    let layout = Arc::new(Layout::from_toml(PIPED).unwrap());
    let text = "POS|SEV|0042|C|\"Nurse, Band 5\"\nASG|whatever|it|holds\n\nPOS|SEV|7|D|\nASG|x\nXYZ|1\n";
    let f = name("DE_SEV_RMC_20220730_00001157.DAT");
    let validation = FileParser::new(text.as_bytes(), &f, layout.clone()).validate().unwrap();
    assert_eq!(validation.fault, None);
    assert_eq!(validation.summary.record_lines, 5);
    assert_eq!(validation.summary.ignored, vec![(Arc::from("ASG"), 2)]);
    let mut p = FileParser::new(text.as_bytes(), &f, layout);
    let mut out = Vec::new();
    while let Some(l) = p.next_line().unwrap() {
        out.push(match l {
            Line::Record(r) => format!("{} {}/{} {}", r.version.line, r.record_type, r.key, r.deleted),
            Line::Ignored { record_type, line } => format!("{line} ignored {record_type}"),
            Line::Reject(r) => format!("{} rejected {}", r.line, r.reason),
        });
    }
    assert_eq!(
        out,
        [
            "1 POS/SEV|42 false",
            "2 ignored ASG",
            "4 POS/SEV|7 true",
            "5 ignored ASG",
            "6 rejected unknown record type \"XYZ\""
        ]
    );
    assert_eq!(p.finish().unwrap(), validation.summary);
}

#[test]
fn header_fields_can_be_anywhere_and_checks_switched_off() {
    let layout = PIPED
        .replace("header = false", "header = { tag = \"H\", seq = 3, date = 2, check_name = false }")
        .replace("trailer = false", "trailer = { tag = \"T\", count = 3 }");
    let layout = Arc::new(Layout::from_toml(&layout).unwrap());
    let f = name("DE_SEV_RMC_20220730_00001157.DAT");
    let check = |text: &str| FileParser::new(text.as_bytes(), &f, layout.clone()).validate().unwrap().fault;
    assert_eq!(check("H|20220801|9\nPOS|SEV|1|C|x\nT|x|1\n"), None, "the name is not compared");
    assert!(matches!(check("H|2022|9\nT|x|0\n"), Some(FileFault::GarbledHeader { .. })), "a date is still a date");
    assert!(matches!(check("H|20220801|9\nPOS|SEV|1|C|x\nT|x|2\n"), Some(FileFault::TrailerCount { .. })));
    assert!(matches!(check("H|20220801|9\nPOS|SEV|1|C|x\n"), Some(FileFault::MissingTrailer { .. })));
}
