//! A Server-Sent Events parser (the WHATWG `text/event-stream` format), fed with whatever
//! chunks the network delivers.
//!
//! Lines end with LF, CRLF or CR; a line starting with `:` is a comment (keep-alive); `field:
//! value` (one optional space after the colon); `data` lines are joined with LF; a blank line
//! dispatches the event (an event without data is dropped, as the spec says). `id` persists
//! across events, as the last event id; ids containing NUL are ignored.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the stream names none.
    pub event: String,
    pub data: String,
    /// The last event id at dispatch (empty if none was ever set).
    pub id: String,
}

/// Incremental parser state. Lines longer than `max_line` bytes are an error, so a broken
/// server cannot make the client buffer without bound.
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    /// A CR ended the previous chunk: a LF starting the next one belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: String,
    max_line: usize,
}

/// The stream broke a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line is longer than {0} bytes")]
pub struct LineTooLong(pub usize);

impl SseParser {
    pub fn new(max_line: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            after_cr: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
            last_id: String::new(),
            max_line,
        }
    }

    /// Feed bytes; returns the events completed by them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        // An empty chunk leaves a pending CR pending: the LF that may complete it is still to come.
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.buf.extend_from_slice(&bytes[..pos]);
            if self.buf.len() > self.max_line {
                return Err(LineTooLong(self.max_line));
            }
            let line = std::mem::take(&mut self.buf);
            self.line(&line, &mut out);
            let cr = bytes[pos] == b'\r';
            bytes = &bytes[pos + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.max_line {
            return Err(LineTooLong(self.max_line));
        }
        Ok(out)
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                let event = if self.event.is_empty() { "message".to_owned() } else { std::mem::take(&mut self.event) };
                out.push(SseEvent { event, data: std::mem::take(&mut self.data), id: self.last_id.clone() });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => self.event = value.into_owned(),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.last_id = value.into_owned(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        chunks.iter().flat_map(|c| p.feed(c).unwrap()).collect()
    }

    #[test]
    fn parses_events_comments_ids_and_multiline_data() {
        let s = b": keep-alive\n\nid: 7\nevent: delta\ndata: {\"a\":1}\ndata: x\n\nevent: ping\n\ndata:y\r\n\r\n";
        let ev = parse_all(&[s]);
        assert_eq!(
            ev,
            vec![
                SseEvent { event: "delta".into(), data: "{\"a\":1}\nx".into(), id: "7".into() },
                SseEvent { event: "message".into(), data: "y".into(), id: "7".into() },
            ]
        );
    }

    #[test]
    fn a_crlf_split_across_chunks_is_one_line_end() {
        let ev = parse_all(&[b"data: a\r", b"\n\r", b"\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "a");
    }

    #[test]
    fn an_empty_chunk_between_a_cr_and_its_lf_changes_nothing() {
        // Found by the chunking property: the empty chunk used to drop the pending CR, so its
        // LF became a blank line that dispatched nothing and reset the event's name.
        let ev = parse_all(&[b"event: a\r", b"", b"\ndata: x\r\n\r\n"]);
        assert_eq!(ev, vec![SseEvent { event: "a".into(), data: "x".into(), id: String::new() }]);
    }

    #[test]
    fn long_lines_are_refused() {
        let mut p = SseParser::new(8);
        assert_eq!(p.feed(b"data: 0123456789"), Err(LineTooLong(8)));
    }

    proptest! {
        // Any bytes: no panic. Any split of a valid stream: the same events.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut p = SseParser::new(256);
            let _ = p.feed(&bytes);
        }

        #[test]
        fn chunking_does_not_change_the_events(
            events in proptest::collection::vec(("[a-z]{0,6}", "[ -~]{0,20}", 0u64..100), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            for (name, data, id) in &events {
                text.push_str(&format!(":c{nl}id: {id}{nl}event: {name}{nl}data: {data}{nl}{nl}"));
            }
            let bytes = text.as_bytes();
            let whole = parse_all(&[bytes]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(parse_all(&chunks), whole.clone());
            prop_assert_eq!(whole.len(), events.len());
        }
    }
}
