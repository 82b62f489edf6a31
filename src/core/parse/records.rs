//! Splitting a byte stream into records of fields, with line numbers, in bounded memory.
//!
//! Invariants (fuzzed in `fuzz/`, pinned by the tests below and `testdata/bad/`):
//! - A physical line ends at LF or CRLF. Line numbers are 1-based and count every
//!   physical line, blank ones and those inside quoted fields included; a record's
//!   number is the line it starts on.
//! - A carriage return not followed by a line feed outside a quoted field is a structural
//!   fault: it would otherwise end a record without ending a line, so two records could
//!   share one line number.
//! - Fields are separated by one separator byte. With quoting on, RFC 4180 applies: a field
//!   that starts with `"` runs to the next lone `"` and may hold separators, line ends and
//!   `""` (one quote). Text after a closing quote marks the row malformed (a line-level
//!   fault); end of input inside a quoted field is a structural fault.
//! - Memory is bounded whatever the input: one read buffer, one row of at most
//!   [`MAX_RECORD_BYTES`] bytes and [`MAX_FIELDS`] field ends. A longer record is a
//!   structural fault; runs of blank lines cost nothing.

use std::io::{self, Read};

/// The largest record accepted (all its bytes, line ends inside quotes included).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Fields kept per row; a row with more is malformed (its extra field ends are dropped).
pub const MAX_FIELDS: usize = 4096;
const READ_BUFFER: usize = 64 * 1024;

/// A fault in the structure of the byte stream: it ends the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Structural {
    /// The record starting on `line` is longer than [`MAX_RECORD_BYTES`].
    TooLong { line: u64 },
    /// A carriage return not followed by a line feed, on `line`.
    LoneCarriageReturn { line: u64 },
    /// The input ends inside the quoted field that starts on `line`.
    UnterminatedQuote { line: u64 },
}

/// Why reading stopped early.
#[derive(Debug)]
pub enum ReadError {
    Structural(Structural),
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// One record: its fields' bytes (quotes removed), where it starts, and why it is
/// malformed if it is.
#[derive(Clone, Debug, Default)]
pub struct Row {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    pub line: u64,
    pub malformed: Option<String>,
}

impl Row {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.bytes.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.malformed = None;
    }

    fn end_field(&mut self) {
        if self.ends.len() < MAX_FIELDS {
            self.ends.push(self.bytes.len());
        } else {
            self.malformed.get_or_insert_with(|| format!("more than {MAX_FIELDS} fields"));
        }
    }
}

/// Reads rows from any `Read`; see the module docs.
pub struct RecordReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    /// The physical line of the next unread byte.
    line: u64,
    separator: u8,
    quoting: bool,
}

impl<R: Read> RecordReader<R> {
    pub fn new(inner: R, separator: u8, quoting: bool) -> Self {
        Self { inner, buf: vec![0; READ_BUFFER].into_boxed_slice(), pos: 0, len: 0, line: 1, separator, quoting }
    }

    /// The reader underneath, with whatever this reader had buffered discarded.
    pub fn into_inner(self) -> R {
        self.inner
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The number of the last physical line read so far (a final line without a line
    /// end counts).
    pub fn lines_read(&self) -> u64 {
        self.line - 1
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if self.pos == self.len {
            self.len = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.pos = 0;
            if self.len == 0 {
                return Ok(None);
            }
        }
        Ok(Some(self.buf[self.pos]))
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    /// Consumes a line end whose first byte (`\n` or `\r`) was peeked.
    fn line_end(&mut self, first: u8) -> Result<(), ReadError> {
        self.bump();
        if first == b'\r' {
            if self.peek()? != Some(b'\n') {
                return Err(ReadError::Structural(Structural::LoneCarriageReturn { line: self.line }));
            }
            self.bump();
        }
        self.line += 1;
        Ok(())
    }

    /// Reads the next non-blank row into `row`; `false` at the end of the input.
    pub fn read(&mut self, row: &mut Row) -> Result<bool, ReadError> {
        row.clear();
        loop {
            match self.peek()? {
                None => return Ok(false),
                Some(b @ (b'\n' | b'\r')) => self.line_end(b)?,
                Some(_) => break,
            }
        }
        row.line = self.line;
        let too_long = |row: &Row| ReadError::Structural(Structural::TooLong { line: row.line });
        loop {
            // One field.
            if self.quoting && self.peek()? == Some(b'"') {
                self.bump();
                self.quoted(row)?;
            }
            loop {
                match self.peek()? {
                    None => {
                        row.end_field();
                        return Ok(true);
                    }
                    Some(b) if b == self.separator => {
                        self.bump();
                        row.end_field();
                        break;
                    }
                    Some(b @ (b'\n' | b'\r')) => {
                        row.end_field();
                        self.line_end(b)?;
                        return Ok(true);
                    }
                    Some(_) => {
                        // The run of plain bytes up to the next separator or line end in
                        // the buffer (at least the byte peeked), taken at once.
                        let avail = &self.buf[self.pos..self.len];
                        let run = memchr::memchr3(self.separator, b'\n', b'\r', avail).unwrap_or(avail.len());
                        if row.bytes.len() + run > MAX_RECORD_BYTES {
                            return Err(too_long(row));
                        }
                        row.bytes.extend_from_slice(&avail[..run]);
                        self.pos += run;
                    }
                }
            }
        }
    }

    /// The rest of a quoted field, after its opening quote. Anything between the closing
    /// quote and the next separator or line end marks the row malformed (the caller reads
    /// it as unquoted text).
    fn quoted(&mut self, row: &mut Row) -> Result<(), ReadError> {
        let starts_on = self.line;
        loop {
            let Some(b) = self.peek()? else {
                return Err(ReadError::Structural(Structural::UnterminatedQuote { line: starts_on }));
            };
            self.bump();
            match b {
                b'"' if self.peek()? == Some(b'"') => {
                    self.bump();
                    row.bytes.push(b'"');
                }
                b'"' => break,
                b'\n' => {
                    self.line += 1;
                    row.bytes.push(b);
                }
                _ => row.bytes.push(b),
            }
            if row.bytes.len() > MAX_RECORD_BYTES {
                return Err(ReadError::Structural(Structural::TooLong { line: row.line }));
            }
        }
        match self.peek()? {
            None | Some(b'\n' | b'\r') => {}
            Some(b) if b == self.separator => {}
            Some(_) => {
                let field = row.len() + 1;
                row.malformed.get_or_insert_with(|| format!("field {field}: text after its closing quote"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (line, fields, malformed) of one row.
    type Seen = (u64, Vec<String>, Option<String>);

    fn rows(input: &[u8]) -> (Vec<Seen>, Option<Structural>) {
        let mut reader = RecordReader::new(input, b',', true);
        let mut row = Row::default();
        let mut out = Vec::new();
        loop {
            match reader.read(&mut row) {
                Ok(true) => out.push((
                    row.line,
                    row.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect(),
                    row.malformed.clone(),
                )),
                Ok(false) => return (out, None),
                Err(ReadError::Structural(s)) => return (out, Some(s)),
                Err(ReadError::Io(e)) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn fields_quotes_and_line_numbers() {
        let (rows, fault) = rows(b"a,b\n\n\"x, \"\"y\"\"\",\"two\nlines\"\r\nlast,");
        assert_eq!(fault, None);
        assert_eq!(rows[0], (1, vec!["a".into(), "b".into()], None));
        assert_eq!(rows[1], (3, vec!["x, \"y\"".into(), "two\nlines".into()], None));
        assert_eq!(rows[2], (5, vec!["last".into(), "".into()], None));
    }

    #[test]
    fn lone_carriage_returns_are_structural_faults() {
        assert_eq!(rows(b"a\rb\n").1, Some(Structural::LoneCarriageReturn { line: 1 }));
        assert_eq!(rows(b"a\n\rb\n").1, Some(Structural::LoneCarriageReturn { line: 2 }));
        assert_eq!(rows(b"a\r").1, Some(Structural::LoneCarriageReturn { line: 1 }));
        assert_eq!(rows(b"a\r\nb\r\n").1, None);
    }

    #[test]
    fn unterminated_quotes_and_text_after_a_quote() {
        assert_eq!(rows(b"a\n\"open,\nmore\n").1, Some(Structural::UnterminatedQuote { line: 2 }));
        let (rows, fault) = rows(b"\"ab\"c,d\n");
        assert_eq!(fault, None);
        assert_eq!(rows[0].1, vec!["abc".to_string(), "d".to_string()]);
        assert!(rows[0].2.as_deref().is_some_and(|m| m.contains("field 1")));
    }

    #[test]
    fn memory_is_bounded_by_the_record_cap() {
        let long = vec![b'x'; MAX_RECORD_BYTES + 1];
        assert_eq!(rows(&long).1, Some(Structural::TooLong { line: 1 }));
        let mut quoted = b"\"".to_vec();
        quoted.extend(std::iter::repeat_n(b'\n', MAX_RECORD_BYTES + 1));
        assert_eq!(rows(&quoted).1, Some(Structural::TooLong { line: 1 }));
        let blank = vec![b'\n'; 3 * READ_BUFFER];
        let (rows, fault) = rows(&[blank.as_slice(), b"a"].concat());
        assert_eq!((rows[0].0, fault), (3 * READ_BUFFER as u64 + 1, None));
    }

    #[test]
    fn too_many_fields_is_malformed_not_unbounded() {
        let line = ",".repeat(MAX_FIELDS + 10);
        let (rows, fault) = rows(line.as_bytes());
        assert_eq!(fault, None);
        assert_eq!(rows[0].1.len(), MAX_FIELDS);
        assert!(rows[0].2.is_some());
    }
}
