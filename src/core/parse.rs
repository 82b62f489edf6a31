//! Streaming file parser.
//!
//! Reads one batch file from any `std::io::Read` with memory independent of its size
//! (a fixed read buffer, one record at a time, records capped at [`MAX_LINE_BYTES`]; see
//! [`records`]) and computes the file's sha256 on the way.
//!
//! Invariants:
//! - **File-level faults** (empty object, missing or garbled header, header that disagrees
//!   with the name, missing or garbled trailer, trailer count mismatch, a line after the
//!   trailer, an over-long record, a lone carriage return, a quote left open at the end)
//!   are only known for sure at the end of the file, so callers
//!   either read the file once to validate it ([`FileParser::validate`]) before delivering
//!   anything, or discard everything they did with its lines when [`FileParser::finish`]
//!   fails.
//! - **Line-level faults** reject one line with its 1-based physical line number (the header
//!   is line 1; blank lines count) and a reason; every other line still becomes a record.

use crate::core::name::FileName;
use crate::core::record::{Record, Reject};
use crate::core::schema::{Layout, Verdict};
use crate::core::version::Version;
use records::{ReadError, RecordReader, Row, Structural};
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::sync::Arc;

pub mod records;

/// Longest record accepted; a longer one is a file-level fault (it bounds memory).
pub const MAX_LINE_BYTES: usize = records::MAX_RECORD_BYTES;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A fault that quarantines the whole file. `Display` is the quarantine reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileFault {
    #[error("empty object")]
    Empty,
    #[error("line {line}: missing header: expected a {tag} record first, found {found:?}")]
    MissingHeader { line: u64, tag: String, found: String },
    #[error("line {line}: garbled header: {why}")]
    GarbledHeader { line: u64, why: String },
    #[error(
        "line {line}: header disagrees with the file name: {part} is {header:?} in the header but {name:?} in the name"
    )]
    HeaderMismatch { line: u64, part: &'static str, header: String, name: String },
    #[error("missing trailer: the file ends at line {last_line} without a {tag} record")]
    MissingTrailer { last_line: u64, tag: String },
    #[error("line {line}: garbled trailer: {why}")]
    GarbledTrailer { line: u64, why: String },
    #[error("line {line}: trailer count {declared} does not match the {found} record lines")]
    TrailerCount { line: u64, declared: u64, found: u64 },
    #[error("line {line}: content after the trailer")]
    AfterTrailer { line: u64 },
    #[error("line {line}: longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong { line: u64 },
    #[error(
        "line {line}: a carriage return not followed by a line feed (lines must end in LF or CRLF; a lone CR would make two records share one line number)"
    )]
    LoneCarriageReturn { line: u64 },
    #[error("line {line}: a quoted field opens here and is never closed")]
    UnterminatedQuote { line: u64 },
}

impl From<Structural> for FileFault {
    fn from(s: Structural) -> Self {
        match s {
            Structural::TooLong { line } => FileFault::LineTooLong { line },
            Structural::LoneCarriageReturn { line } => FileFault::LoneCarriageReturn { line },
            Structural::UnterminatedQuote { line } => FileFault::UnterminatedQuote { line },
        }
    }
}

/// Why parsing stopped: the file is bad, or it could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Fault(#[from] FileFault),
    #[error("read failed: {0}")]
    Read(#[source] io::Error),
}

/// One record line's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Record(Record),
    Reject(Reject),
    /// A record type the layout knows and does not apply.
    Ignored {
        record_type: Arc<str>,
        line: u64,
    },
}

/// What a complete read of a file established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    pub sha256: String,
    pub size: u64,
    /// Record lines between header and trailer (rejected and ignored ones included).
    pub record_lines: u64,
    /// Lines of record types the layout does not apply, per type (in layout order of
    /// first appearance).
    pub ignored: Vec<(Arc<str>, u64)>,
}

impl FileSummary {
    /// Lines of types the layout does not apply.
    pub fn ignored_lines(&self) -> u64 {
        self.ignored.iter().map(|(_, n)| n).sum()
    }
}

/// The outcome of the validation pass: the file's digest, and its fault if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    pub summary: FileSummary,
    pub fault: Option<FileFault>,
}

/// Hashes and counts every byte read.
struct Metered<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

impl<R: Read> Metered<R> {
    /// Reads the rest of the input, so the digest covers the whole object.
    fn drain(mut self) -> io::Result<FileSummary> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(FileSummary {
            sha256: hex::encode(self.hasher.finalize()),
            size: self.size,
            record_lines: 0,
            ignored: Vec::new(),
        })
    }
}

/// Skips a leading UTF-8 BOM (the hash still covers it: `Metered` sits underneath).
struct SkipBom<R> {
    inner: R,
    head: Vec<u8>,
    started: bool,
}

impl<R: Read> Read for SkipBom<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.started {
            self.started = true;
            let mut head = [0u8; 3];
            let mut got = 0;
            while got < 3 {
                match self.inner.read(&mut head[got..])? {
                    0 => break,
                    n => got += n,
                }
            }
            if &head[..got] != BOM {
                self.head = head[..got].to_vec();
            }
        }
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head.drain(..n);
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

enum Stage {
    Header,
    Body,
    /// After the trailer; `declared` is its count when it is checked.
    Trailer {
        line: u64,
        declared: Option<u64>,
    },
}

/// Reads one file record by record; see the module docs for the guarantees.
pub struct FileParser<R: Read> {
    reader: RecordReader<SkipBom<Metered<R>>>,
    file: FileName,
    name: Arc<str>,
    region: Arc<str>,
    layout: Arc<Layout>,
    stage: Stage,
    record_lines: u64,
    ignored: Vec<(Arc<str>, u64)>,
    row: Row,
}

impl<R: Read> FileParser<R> {
    pub fn new(reader: R, file: &FileName, layout: Arc<Layout>) -> Self {
        let metered = Metered { inner: reader, hasher: Sha256::new(), size: 0 };
        let skip_bom = SkipBom { inner: metered, head: Vec::new(), started: false };
        let reader = RecordReader::new(skip_bom, layout.separator, layout.quoting);
        let stage = if layout.header.is_some() { Stage::Header } else { Stage::Body };
        Self {
            reader,
            name: file.name.as_str().into(),
            region: file.region.as_str().into(),
            file: file.clone(),
            layout,
            stage,
            record_lines: 0,
            ignored: Vec::new(),
            row: Row::default(),
        }
    }

    /// Reads the whole file without building records: the validation pass. The file is
    /// always read to its end, so a faulty file still gets its sha256 and size (a
    /// re-upload of the same bad bytes is then recognised as a duplicate).
    pub fn validate(self) -> Result<Validation, io::Error> {
        self.validate_keeping(false, |_| {})
    }

    /// The validation pass, also building every line and handing it to `keep` as it is
    /// read when `build` is set: a caller can keep a small file's lines instead of
    /// reading the file again. The validation is the same either way. When it finds a
    /// fault, lines before the fault were handed over already; they must not be used.
    pub fn validate_keeping(mut self, build: bool, mut keep: impl FnMut(Line)) -> Result<Validation, io::Error> {
        let fault = loop {
            match self.advance(build) {
                Ok(Some(line)) => keep(line),
                Ok(None) => break self.end_fault(),
                Err(ParseError::Read(e)) => return Err(e),
                Err(ParseError::Fault(fault)) => break Some(fault),
            }
        };
        let (record_lines, ignored) = (self.record_lines, std::mem::take(&mut self.ignored));
        let mut summary = self.reader.into_inner().inner.drain()?;
        summary.record_lines = record_lines;
        summary.ignored = ignored;
        Ok(Validation { summary, fault })
    }

    /// The next record line, or `None` at the end of the file (then call [`Self::finish`]).
    pub fn next_line(&mut self) -> Result<Option<Line>, ParseError> {
        self.advance(true)
    }

    /// Completes the file-level checks once every line has been read.
    pub fn finish(mut self) -> Result<FileSummary, ParseError> {
        if let Some(fault) = self.end_fault() {
            return Err(fault.into());
        }
        let (record_lines, ignored) = (self.record_lines, std::mem::take(&mut self.ignored));
        let mut summary = self.reader.into_inner().inner.drain().map_err(ParseError::Read)?;
        summary.record_lines = record_lines;
        summary.ignored = ignored;
        Ok(summary)
    }

    /// The file-level fault known once the input has ended, if any.
    fn end_fault(&self) -> Option<FileFault> {
        if self.reader.get_ref().inner.size == 0 {
            return Some(FileFault::Empty);
        }
        match (&self.stage, &self.layout.header, &self.layout.trailer) {
            (Stage::Header, header, _) => Some(FileFault::MissingHeader {
                line: 1,
                tag: header.as_ref().map(|h| h.tag.clone()).unwrap_or_default(),
                found: String::new(),
            }),
            (Stage::Body, _, Some(trailer)) => {
                Some(FileFault::MissingTrailer { last_line: self.reader.lines_read(), tag: trailer.tag.clone() })
            }
            (Stage::Body, _, None) => None,
            (Stage::Trailer { line, declared: Some(declared) }, _, _) if *declared != self.record_lines => {
                Some(FileFault::TrailerCount { line: *line, declared: *declared, found: self.record_lines })
            }
            (Stage::Trailer { .. }, _, _) => None,
        }
    }

    fn advance(&mut self, build: bool) -> Result<Option<Line>, ParseError> {
        loop {
            match self.reader.read(&mut self.row) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(ReadError::Structural(s)) => return Err(FileFault::from(s).into()),
                Err(ReadError::Io(e)) => return Err(ParseError::Read(e)),
            }
            let line = self.row.line;
            if self.row.len() == 1 && self.row.get(0).is_some_and(<[u8]>::is_empty) {
                continue; // a line holding only an empty quoted field: blank
            }
            match self.stage {
                Stage::Header => {
                    self.check_header(line)?;
                    self.stage = Stage::Body;
                }
                Stage::Trailer { .. } => return Err(FileFault::AfterTrailer { line }.into()),
                Stage::Body
                    if self.layout.trailer.as_ref().is_some_and(|t| self.row.get(0) == Some(t.tag.as_bytes())) =>
                {
                    let declared = self.parse_trailer(line)?;
                    self.stage = Stage::Trailer { line, declared };
                }
                Stage::Body => {
                    self.record_lines += 1;
                    if let Some(record_type) = self.ignored_type() {
                        self.count_ignored(&record_type);
                        if build {
                            return Ok(Some(Line::Ignored { record_type, line }));
                        }
                    } else if build {
                        return Ok(Some(self.record_line(line)));
                    }
                }
            }
        }
    }

    fn text(&self, i: usize) -> Option<&str> {
        self.row.get(i).and_then(|b| std::str::from_utf8(b).ok())
    }

    fn check_header(&self, line: u64) -> Result<(), FileFault> {
        let Some(header) = &self.layout.header else { return Ok(()) };
        let tag = &header.tag;
        if self.text(0) != Some(tag.as_str()) {
            return Err(FileFault::MissingHeader { line, tag: tag.clone(), found: self.raw(80) });
        }
        let garbled = |why: String| FileFault::GarbledHeader { line, why };
        if let Some(why) = &self.row.malformed {
            return Err(garbled(why.clone()));
        }
        if let Some(n) = header.fields
            && self.row.len() != n
        {
            return Err(garbled(format!("expected {n} fields, found {}", self.row.len())));
        }
        let field = |i: usize| {
            self.text(i).ok_or_else(|| match self.row.get(i) {
                None => garbled(format!("field {} is missing", i + 1)),
                Some(_) => garbled(format!("field {} is not valid UTF-8", i + 1)),
            })
        };
        let mismatch = |part, header: &str, name: String| FileFault::HeaderMismatch {
            line,
            part,
            header: header.to_string(),
            name,
        };
        let f = &self.file;
        if let Some(i) = header.kind {
            let kind = field(i)?;
            if header.check_name && kind != f.kind {
                return Err(mismatch("kind", kind, f.kind.clone()));
            }
        }
        if let Some(i) = header.region {
            let region = field(i)?;
            if header.check_name && region != f.region {
                return Err(mismatch("region", region, f.region.clone()));
            }
        }
        if let Some(i) = header.date {
            let date = field(i)?;
            let value = crate::core::name::parse_yyyymmdd(date)
                .ok_or_else(|| garbled(format!("date {date:?} is not a calendar date (YYYYMMDD)")))?;
            if header.check_name && value != f.date {
                return Err(mismatch("date", date, f.date.format("%Y%m%d").to_string()));
            }
        }
        if let Some(i) = header.seq {
            let seq = field(i)?;
            let value: u64 = seq
                .parse()
                .ok()
                .filter(|_| seq.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| garbled(format!("SEQ {seq:?} is not a number")))?;
            if header.check_name && value != f.seq {
                return Err(mismatch("SEQ", seq, f.seq.to_string()));
            }
        }
        Ok(())
    }

    /// The trailer's declared count, when it is checked.
    fn parse_trailer(&self, line: u64) -> Result<Option<u64>, FileFault> {
        let garbled = |why: String| FileFault::GarbledTrailer { line, why };
        let Some(trailer) = &self.layout.trailer else { return Ok(None) };
        if let Some(why) = &self.row.malformed {
            return Err(garbled(why.clone()));
        }
        if let Some(n) = trailer.fields
            && self.row.len() != n
        {
            return Err(garbled(format!("expected {n} fields, found {}", self.row.len())));
        }
        let Some(i) = trailer.count else { return Ok(None) };
        let count = self.text(i).unwrap_or("");
        let declared = count
            .parse()
            .ok()
            .filter(|_| count.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| garbled(format!("count {count:?} is not a number")))?;
        Ok(trailer.check_count.then_some(declared))
    }

    fn count_ignored(&mut self, record_type: &Arc<str>) {
        match self.ignored.iter_mut().find(|(t, _)| t == record_type) {
            Some((_, n)) => *n += 1,
            None => self.ignored.push((record_type.clone(), 1)),
        }
    }

    fn raw(&self, limit: usize) -> String {
        let mut out = String::new();
        for (i, f) in self.row.iter().enumerate() {
            if i > 0 {
                out.push(char::from(self.layout.separator));
            }
            out.push_str(&String::from_utf8_lossy(f));
            if out.len() > limit {
                let cut = (0..=limit).rev().find(|i| out.is_char_boundary(*i)).unwrap_or(0);
                out.truncate(cut);
                out.push('…');
                break;
            }
        }
        out
    }

    /// The line's record type when the layout knows it and does not apply it.
    fn ignored_type(&self) -> Option<Arc<str>> {
        let first = self.row.get(0)?;
        self.layout.ignored_types().iter().find(|t| t.as_bytes() == first).cloned()
    }

    fn record_line(&self, line: u64) -> Line {
        let reject =
            |reason: String| Line::Reject(Reject { file: self.name.clone(), line, reason, raw: self.raw(1000) });
        if let Some(why) = &self.row.malformed {
            return reject(why.clone());
        }
        let mut fields = Vec::with_capacity(self.row.len());
        for (i, bytes) in self.row.iter().enumerate() {
            match std::str::from_utf8(bytes) {
                Ok(s) => fields.push(s),
                Err(_) => return reject(format!("line is not valid UTF-8 (field {})", i + 1)),
            }
        }
        match self.layout.check(&fields) {
            Ok(Verdict::Record(checked)) => {
                let version = Version { date: self.file.date, seq: self.file.seq, line };
                Line::Record(checked.layout.build(&fields, checked.deleted, version, &self.region, &self.name))
            }
            Ok(Verdict::Ignored(t)) => Line::Ignored { record_type: t.clone(), line },
            Err(fault) => reject(fault.0),
        }
    }
}

#[cfg(test)]
mod tests;
