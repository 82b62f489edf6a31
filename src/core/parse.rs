//! Streaming file parser.
//!
//! Reads one batch file from any `std::io::Read` with memory independent of its size
//! (a fixed read buffer, one line at a time, lines capped at [`MAX_LINE_BYTES`]) and
//! computes the file's sha256 on the way.
//!
//! Invariants:
//! - **File-level faults** (empty object, missing or garbled header, header that disagrees
//!   with the name, missing or garbled trailer, trailer count mismatch, a line after the
//!   trailer, an over-long line) are only known for sure at the end of the file, so callers
//!   either read the file once to validate it ([`FileParser::validate`]) before delivering
//!   anything, or discard everything they did with its lines when [`FileParser::finish`]
//!   fails.
//! - **Line-level faults** reject one line with its 1-based physical line number (the header
//!   is line 1; blank lines count) and a reason; every other line still becomes a record.

use crate::core::name::FileName;
use crate::core::record::{Record, Reject};
use crate::core::schema::Layout;
use crate::core::version::Version;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// Longest physical line accepted; a longer one is a file-level fault (it bounds memory).
pub const MAX_LINE_BYTES: usize = 1 << 20;
const READ_BUFFER: usize = 64 * 1024;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A fault that quarantines the whole file. `Display` is the quarantine reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileFault {
    #[error("empty object")]
    Empty,
    #[error("line {line}: missing header: expected {tag},<KIND>,<REGION>,<YYYYMMDD>,<SEQ>, found {found:?}")]
    MissingHeader { line: u64, tag: String, found: String },
    #[error("line {line}: garbled header: {why}")]
    GarbledHeader { line: u64, why: String },
    #[error(
        "line {line}: header disagrees with the file name: {part} is {header:?} in the header but {name:?} in the name"
    )]
    HeaderMismatch { line: u64, part: &'static str, header: String, name: String },
    #[error("missing trailer: the file ends at line {last_line} without a {tag},<COUNT> line")]
    MissingTrailer { last_line: u64, tag: String },
    #[error("line {line}: garbled trailer: {why}")]
    GarbledTrailer { line: u64, why: String },
    #[error("line {line}: trailer count {declared} does not match the {found} record lines")]
    TrailerCount { line: u64, declared: u64, found: u64 },
    #[error("line {line}: content after the trailer")]
    AfterTrailer { line: u64 },
    #[error("line {line}: longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong { line: u64 },
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
#[derive(Debug)]
pub enum Line {
    Record(Record),
    Reject(Reject),
}

/// What a complete read of a file established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    pub sha256: String,
    pub size: u64,
    /// Record lines between header and trailer (rejected ones included).
    pub record_lines: u64,
}

/// The outcome of the validation pass: the file's digest, and its fault if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    pub summary: FileSummary,
    pub fault: Option<FileFault>,
}

/// Hashes and counts every byte read, and enforces the line-length cap.
struct Metered<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    current_line: usize,
    line_no: u64,
    enforce_line_cap: bool,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        self.hasher.update(chunk);
        self.size += n as u64;
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.current_line += pos;
            self.check_line()?;
            self.current_line = 0;
            self.line_no += 1;
            rest = &rest[pos + 1..];
        }
        self.current_line += rest.len();
        self.check_line()?;
        Ok(n)
    }
}

impl<R> Metered<R> {
    /// The digest so far, without consuming the reader (used when `finish` reports a fault
    /// after the whole file was read).
    fn clone_counters(&self) -> FileSummary {
        FileSummary { sha256: hex::encode(self.hasher.clone().finalize()), size: self.size, record_lines: 0 }
    }

    fn check_line(&self) -> io::Result<()> {
        if self.enforce_line_cap && self.current_line > MAX_LINE_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, LineTooLongMarker(self.line_no + 1)));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct LineTooLongMarker(u64);
impl std::fmt::Display for LineTooLongMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} is too long", self.0)
    }
}
impl std::error::Error for LineTooLongMarker {}

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

/// Records the byte offset of every line-terminator byte (`\r`, `\n`) read, so a record's
/// physical line number can be derived from its byte offset: the csv reader skips blank
/// lines without counting them and reports a record's start before the skipped lines.
/// Entries are dropped as soon as the parser passes them: the queue never holds more than
/// one read buffer's worth.
struct LineIndex<R> {
    inner: R,
    offset: u64,
    newlines: Arc<Mutex<VecDeque<Terminator>>>,
}

#[derive(Clone, Copy)]
struct Terminator {
    offset: u64,
    newline: bool,
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        // A poisoned lock can only come from a panic in this same parser; keep going.
        let mut q = self.newlines.lock().unwrap_or_else(|p| p.into_inner());
        let terminators = buf[..n].iter().enumerate().filter(|(_, b)| matches!(b, b'\n' | b'\r'));
        q.extend(terminators.map(|(i, b)| Terminator { offset: self.offset + i as u64, newline: *b == b'\n' }));
        self.offset += n as u64;
        Ok(n)
    }
}

enum Stage {
    Header,
    Body,
    Trailer { line: u64, declared: u64 },
}

/// Reads one file line by line; see the module docs for the guarantees.
pub struct FileParser<R: Read> {
    csv: csv::Reader<LineIndex<SkipBom<Metered<R>>>>,
    newlines: Arc<Mutex<VecDeque<Terminator>>>,
    lines_before: u64,
    file: FileName,
    name: Arc<str>,
    region: Arc<str>,
    layout: Arc<Layout>,
    stage: Stage,
    record_lines: u64,
    last_line: u64,
    row: csv::ByteRecord,
}

impl<R: Read> FileParser<R> {
    pub fn new(reader: R, file: &FileName, layout: Arc<Layout>) -> Self {
        let metered = Metered {
            inner: reader,
            hasher: Sha256::new(),
            size: 0,
            current_line: 0,
            line_no: 0,
            enforce_line_cap: true,
        };
        let newlines = Arc::new(Mutex::new(VecDeque::new()));
        let csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).buffer_capacity(READ_BUFFER).from_reader(
            LineIndex {
                inner: SkipBom { inner: metered, head: Vec::new(), started: false },
                offset: 0,
                newlines: newlines.clone(),
            },
        );
        Self {
            csv,
            newlines,
            lines_before: 0,
            name: file.name.as_str().into(),
            region: file.region.as_str().into(),
            file: file.clone(),
            layout,
            stage: Stage::Header,
            record_lines: 0,
            last_line: 0,
            row: csv::ByteRecord::new(),
        }
    }

    /// Reads the whole file without building records: the validation pass. The file is
    /// always read to its end, so a faulty file still gets its sha256 and size (a
    /// re-upload of the same bad bytes is then recognised as a duplicate).
    pub fn validate(mut self) -> Result<Validation, io::Error> {
        loop {
            match self.advance(false) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(ParseError::Read(e)) => return Err(e),
                Err(ParseError::Fault(fault)) => return self.drain(fault),
            }
        }
        let record_lines = self.record_lines;
        let mut metered = self.csv.get_ref().inner.inner.clone_counters();
        match self.finish() {
            Ok(summary) => Ok(Validation { summary, fault: None }),
            Err(ParseError::Read(e)) => Err(e),
            Err(ParseError::Fault(fault)) => {
                metered.record_lines = record_lines;
                Ok(Validation { summary: metered, fault: Some(fault) })
            }
        }
    }

    fn drain(self, fault: FileFault) -> Result<Validation, io::Error> {
        let record_lines = self.record_lines;
        let mut metered = self.csv.into_inner().inner.inner;
        metered.enforce_line_cap = false;
        io::copy(&mut metered, &mut io::sink())?;
        Ok(Validation {
            summary: FileSummary { sha256: hex::encode(metered.hasher.finalize()), size: metered.size, record_lines },
            fault: Some(fault),
        })
    }

    /// The next record line, or `None` at the end of the file (then call [`Self::finish`]).
    pub fn next_line(&mut self) -> Result<Option<Line>, ParseError> {
        self.advance(true)
    }

    /// Completes the file-level checks once every line has been read.
    pub fn finish(self) -> Result<FileSummary, ParseError> {
        let (declared, trailer_line) = match self.stage {
            Stage::Header => {
                let metered = &self.csv.get_ref().inner;
                return Err(if metered.inner.size == 0 {
                    FileFault::Empty
                } else {
                    FileFault::MissingHeader { line: 1, tag: self.layout.header_tag.clone(), found: String::new() }
                }
                .into());
            }
            Stage::Body => {
                return Err(FileFault::MissingTrailer {
                    last_line: self.last_line,
                    tag: self.layout.trailer_tag.clone(),
                }
                .into());
            }
            Stage::Trailer { line, declared } => (declared, line),
        };
        if declared != self.record_lines {
            return Err(FileFault::TrailerCount { line: trailer_line, declared, found: self.record_lines }.into());
        }
        let metered = self.csv.into_inner().inner.inner;
        Ok(FileSummary {
            sha256: hex::encode(metered.hasher.finalize()),
            size: metered.size,
            record_lines: self.record_lines,
        })
    }

    fn advance(&mut self, build: bool) -> Result<Option<Line>, ParseError> {
        loop {
            let more = self.csv.read_byte_record(&mut self.row).map_err(|e| self.read_error(e))?;
            if !more {
                return Ok(None);
            }
            let line = self.physical_line();
            self.last_line = line;
            if self.row.len() == 1 && self.row[0].is_empty() {
                continue; // a blank line
            }
            match self.stage {
                Stage::Header => {
                    self.check_header(line)?;
                    self.stage = Stage::Body;
                }
                Stage::Trailer { .. } => return Err(FileFault::AfterTrailer { line }.into()),
                Stage::Body if &self.row[0] == self.layout.trailer_tag.as_bytes() => {
                    let declared = self.parse_trailer(line)?;
                    self.stage = Stage::Trailer { line, declared };
                }
                Stage::Body => {
                    self.record_lines += 1;
                    if build {
                        return Ok(Some(self.record_line(line)));
                    }
                }
            }
        }
    }

    /// The 1-based physical line on which the current row starts.
    fn physical_line(&mut self) -> u64 {
        let mut start = self.row.position().map_or(0, |p| p.byte());
        let mut q = self.newlines.lock().unwrap_or_else(|p| p.into_inner());
        // Terminators before the row, then the run of terminators at its reported start
        // (skipped blank lines), all belong to earlier lines.
        while let Some(t) = q.front().copied().filter(|t| t.offset <= start) {
            if t.offset == start {
                start += 1;
            }
            self.lines_before += u64::from(t.newline);
            q.pop_front();
        }
        self.lines_before + 1
    }

    fn read_error(&self, e: csv::Error) -> ParseError {
        match e.into_kind() {
            csv::ErrorKind::Io(io) => {
                if let Some(marker) = io.get_ref().and_then(|r| r.downcast_ref::<LineTooLongMarker>()) {
                    return FileFault::LineTooLong { line: marker.0 }.into();
                }
                ParseError::Read(io)
            }
            // The reader is flexible and reads bytes, so no other error kinds arise; keep
            // them as read failures rather than panicking.
            other => ParseError::Read(io::Error::other(format!("{other:?}"))),
        }
    }

    fn text(&self, i: usize) -> Option<&str> {
        self.row.get(i).and_then(|b| std::str::from_utf8(b).ok())
    }

    fn check_header(&self, line: u64) -> Result<(), FileFault> {
        let tag = &self.layout.header_tag;
        if self.text(0) != Some(tag.as_str()) {
            return Err(FileFault::MissingHeader { line, tag: tag.clone(), found: self.raw(80) });
        }
        let garbled = |why: String| FileFault::GarbledHeader { line, why };
        if self.row.len() != 5 {
            return Err(garbled(format!("expected 5 fields, found {}", self.row.len())));
        }
        let field = |i| self.text(i).ok_or_else(|| garbled(format!("field {} is not valid UTF-8", i + 1)));
        let (kind, region, date, seq) = (field(1)?, field(2)?, field(3)?, field(4)?);
        let date_value = crate::core::name::parse_yyyymmdd(date)
            .ok_or_else(|| garbled(format!("date {date:?} is not a calendar date (YYYYMMDD)")))?;
        let seq_value: u64 = seq
            .parse()
            .ok()
            .filter(|_| seq.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| garbled(format!("SEQ {seq:?} is not a number")))?;
        let mismatch = |part, header: &str, name: String| FileFault::HeaderMismatch {
            line,
            part,
            header: header.to_string(),
            name,
        };
        let f = &self.file;
        if kind != f.kind {
            return Err(mismatch("kind", kind, f.kind.clone()));
        }
        if region != f.region {
            return Err(mismatch("region", region, f.region.clone()));
        }
        if date_value != f.date {
            return Err(mismatch("date", date, f.date.format("%Y%m%d").to_string()));
        }
        if seq_value != f.seq {
            return Err(mismatch("SEQ", seq, f.seq.to_string()));
        }
        Ok(())
    }

    fn parse_trailer(&self, line: u64) -> Result<u64, FileFault> {
        let garbled = |why: String| FileFault::GarbledTrailer { line, why };
        if self.row.len() != 2 {
            return Err(garbled(format!("expected 2 fields, found {}", self.row.len())));
        }
        let count = self.text(1).unwrap_or("");
        count
            .parse()
            .ok()
            .filter(|_| count.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| garbled(format!("count {count:?} is not a number")))
    }

    fn raw(&self, limit: usize) -> String {
        let mut out = String::new();
        for (i, f) in self.row.iter().enumerate() {
            if i > 0 {
                out.push(',');
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

    fn record_line(&self, line: u64) -> Line {
        let reject =
            |reason: String| Line::Reject(Reject { file: self.name.clone(), line, reason, raw: self.raw(1000) });
        let mut fields = Vec::with_capacity(self.row.len());
        for (i, bytes) in self.row.iter().enumerate() {
            match std::str::from_utf8(bytes) {
                Ok(s) => fields.push(s),
                Err(_) => return reject(format!("line is not valid UTF-8 (field {})", i + 1)),
            }
        }
        match self.layout.check(&fields) {
            Ok(checked) => {
                let version = Version { date: self.file.date, seq: self.file.seq, line };
                Line::Record(checked.layout.build(&fields, checked.deleted, version, &self.region, &self.name))
            }
            Err(fault) => reject(fault.0),
        }
    }
}

#[cfg(test)]
mod tests;
