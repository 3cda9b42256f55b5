//! Where a large text file can be cut so that every part starts at a row start and ends
//! at a row end: then each part is loaded on its own, in parallel, and every row exactly
//! once.
//!
//! - JSON lines cannot hold a raw newline inside a value, so the first `\n` at or after
//!   a mark ends a row: a few KiB read at each mark find it.
//! - CSV can: a newline inside a quoted field is data. Whether a byte is inside quotes
//!   depends on every byte before it, so the file is scanned once from the start with the
//!   dataset's quote, escape and delimiter, following the same rules as the CSV reader
//!   that loads it (a quote opens a quoted field only at the start of a field).
//!
//! Parquet is cut by row groups instead, which needs no reading here: each part loads
//! the row groups that start in its byte range.

use shared::catalog::CsvOptions;

/// Finds the row ends of a CSV byte stream fed in pieces.
#[derive(Debug, Clone)]
pub(crate) struct CsvRowEnds {
    options: CsvOptions,
    state: CsvState,
    /// Absolute position of the next byte fed.
    position: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsvState {
    /// Nothing of the row read yet: a terminator here is an empty line, which the reader
    /// skips (and counts as the start of the next row).
    RowStart,
    /// At the start of a field: a quote here opens a quoted field.
    FieldStart,
    /// In an unquoted field: quotes are data.
    Unquoted,
    /// Inside quotes: delimiters and newlines are data.
    Quoted,
    /// Just after the escape byte inside quotes: the next byte is data.
    Escaped,
    /// Just after a quote inside quotes: a second quote is an escaped quote (when
    /// quotes are doubled), anything else ends the quoted part.
    QuoteInQuoted,
}

impl CsvRowEnds {
    pub fn new(options: CsvOptions) -> Self {
        Self {
            options,
            state: CsvState::RowStart,
            position: 0,
        }
    }

    /// Feeds the next bytes, calling `row_end` with the position just after the
    /// terminator of each non-empty row. The reader places a row's start at the first
    /// byte after the previous row's terminator, empty lines included (after a CRLF pair,
    /// at the `\n`), so a part cut at these positions numbers its rows' offsets exactly as
    /// a read of the whole file does.
    pub fn feed(&mut self, bytes: &[u8], mut row_end: impl FnMut(u64)) {
        let CsvOptions {
            delimiter,
            quote,
            escape,
            ..
        } = self.options;
        let doubled_quotes = escape.is_none();
        for &byte in bytes {
            self.position += 1;
            let terminator = byte == b'\n' || byte == b'\r';
            self.state = match self.state {
                CsvState::RowStart if terminator => CsvState::RowStart,
                CsvState::FieldStart | CsvState::Unquoted | CsvState::QuoteInQuoted
                    if terminator =>
                {
                    row_end(self.position);
                    CsvState::RowStart
                }
                CsvState::RowStart | CsvState::FieldStart if byte == quote => CsvState::Quoted,
                CsvState::RowStart | CsvState::FieldStart | CsvState::Unquoted
                    if byte == delimiter =>
                {
                    CsvState::FieldStart
                }
                CsvState::RowStart | CsvState::FieldStart | CsvState::Unquoted => {
                    CsvState::Unquoted
                }
                // The quote is checked first, as the reader does (an escape equal to the
                // quote then acts as a closing quote).
                CsvState::Quoted if byte == quote => CsvState::QuoteInQuoted,
                CsvState::Quoted if Some(byte) == escape => CsvState::Escaped,
                CsvState::Quoted | CsvState::Escaped => CsvState::Quoted,
                CsvState::QuoteInQuoted if doubled_quotes && byte == quote => CsvState::Quoted,
                CsvState::QuoteInQuoted if byte == delimiter => CsvState::FieldStart,
                CsvState::QuoteInQuoted => CsvState::Unquoted,
            };
        }
    }
}

/// The first JSON-lines row end at or after `mark` in `bytes`, which start at absolute
/// position `at`.
pub(crate) fn jsonl_row_end(bytes: &[u8], at: u64, mark: u64) -> Option<u64> {
    let skip = usize::try_from(mark.saturating_sub(at + 1)).unwrap_or(usize::MAX);
    bytes
        .iter()
        .enumerate()
        .skip(skip)
        .find(|(_, byte)| **byte == b'\n')
        .map(|(index, _)| at + index as u64 + 1)
        .filter(|end| *end >= mark)
}

/// Picks cut points from row ends as they are found: a cut at the first row end at least
/// `part_size` bytes after the previous cut, never at the end of the file.
#[derive(Debug, Clone)]
pub struct Cuts {
    part_size: u64,
    size: u64,
    /// The position the next cut must reach.
    pub next_mark: u64,
    pub cuts: Vec<u64>,
}

impl Cuts {
    pub fn new(size: u64, part_size: u64) -> Self {
        let part_size = part_size.max(1);
        Self {
            part_size,
            size,
            next_mark: part_size,
            cuts: Vec::new(),
        }
    }

    /// Offers a row end; returns whether it became a cut.
    pub fn offer(&mut self, row_end: u64) -> bool {
        if row_end < self.next_mark || row_end >= self.size {
            return false;
        }
        self.cuts.push(row_end);
        self.next_mark = row_end.saturating_add(self.part_size);
        true
    }

    /// Whether no further cut is possible (the next mark is past the end).
    pub fn done(&self) -> bool {
        self.next_mark >= self.size
    }

    /// The byte ranges `[start, end)` of the parts.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut starts = vec![0];
        starts.extend(&self.cuts);
        let mut ends = self.cuts.clone();
        ends.push(self.size);
        starts.into_iter().zip(ends).collect()
    }
}

/// Equal byte ranges (Parquet: each part loads the row groups starting inside it).
pub(crate) fn even_ranges(size: u64, part_size: u64) -> Vec<(u64, u64)> {
    let part_size = part_size.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < size {
        let end = start.saturating_add(part_size).min(size);
        ranges.push((start, end));
        start = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_row_ends(text: &[u8], options: CsvOptions) -> Vec<u64> {
        let mut ends = Vec::new();
        let mut scanner = CsvRowEnds::new(options);
        // Feed in odd pieces: state must carry across calls.
        for piece in text.chunks(3) {
            scanner.feed(piece, |end| ends.push(end));
        }
        ends
    }

    /// Row starts as the csv crate sees them, for comparison.
    fn csv_crate_row_starts(text: &[u8], options: CsvOptions) -> Vec<u64> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(options.delimiter)
            .quote(options.quote)
            .escape(options.escape)
            .double_quote(options.escape.is_none())
            .has_headers(false)
            .flexible(true)
            .from_reader(text);
        let mut record = csv::ByteRecord::new();
        let mut starts = Vec::new();
        while reader.read_byte_record(&mut record).expect("valid csv") {
            starts.push(record.position().expect("position").byte());
        }
        starts
    }

    /// Every row end but the last must be where the csv crate starts the next row.
    fn assert_matches_reader(text: &[u8], options: CsvOptions) -> Vec<u64> {
        let ends = csv_row_ends(text, options);
        let starts = csv_crate_row_starts(text, options);
        assert!(
            ends.len() + 1 >= starts.len(),
            "a row end for every row but maybe the last: {ends:?} {starts:?}"
        );
        assert_eq!(
            ends[..starts.len() - 1],
            starts[1..],
            "each row starts where the previous one ended, in {:?}",
            String::from_utf8_lossy(text)
        );
        ends
    }

    #[test]
    fn quoted_newlines_delimiters_and_doubled_quotes_are_data() {
        let text = b"id,name\n1,\"a\nb\"\n2,\"say \"\"hi\"\"\nthere\",x\n3,plain\"quote\n4,\"\"\n";
        let ends = assert_matches_reader(text, CsvOptions::default());
        assert_eq!(ends.len(), 5, "{ends:?}");
        assert_eq!(ends[1], 16, "the newline inside quotes is not a row end");
    }

    #[test]
    fn escapes_crlf_blank_lines_and_other_delimiters_follow_the_reader() {
        let escaped = CsvOptions {
            escape: Some(b'\\'),
            ..CsvOptions::default()
        };
        let ends = assert_matches_reader(b"1,\"a\\\"\r\nb\"\r\n2,c\r\n", escaped);
        assert_eq!(ends, [11, 16], "cut after the \\r of CRLF");
        assert_matches_reader(b"a\n\n\nb\n\r\nc", CsvOptions::default());
        let semicolons = CsvOptions {
            delimiter: b';',
            quote: b'\'',
            ..CsvOptions::default()
        };
        let ends = assert_matches_reader(b"1;'x;\ny'\n2;'it''s'\n", semicolons);
        assert_eq!(ends.len(), 2);
    }

    #[test]
    fn jsonl_row_end_finds_the_first_newline_at_or_after_the_mark() {
        let text = b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n";
        assert_eq!(jsonl_row_end(text, 0, 8), Some(8), "a mark on a row start");
        assert_eq!(jsonl_row_end(text, 0, 9), Some(16));
        assert_eq!(jsonl_row_end(&text[7..], 7, 9), Some(16), "window not at 0");
        assert_eq!(jsonl_row_end(b"{\"a\":1}", 0, 3), None);
    }

    #[test]
    fn cuts_follow_row_ends_and_never_cut_at_the_end() {
        let mut cuts = Cuts::new(100, 30);
        for end in [10, 20, 35, 50, 64, 70, 99, 100] {
            cuts.offer(end);
        }
        assert_eq!(cuts.cuts, [35, 70]);
        assert_eq!(cuts.ranges(), [(0, 35), (35, 70), (70, 100)]);
        assert!(cuts.done() || cuts.next_mark == 100);
        assert_eq!(even_ranges(10, 4), [(0, 4), (4, 8), (8, 10)]);
        assert!(even_ranges(0, 4).is_empty());
    }
}
