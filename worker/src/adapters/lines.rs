//! Cuts a process's output into the lines of `stdout` / `stderr` events: newline stripped,
//! lines longer than [`MAX_LINE_BYTES`] split between characters, invalid UTF-8 replaced
//! by U+FFFD and NUL characters dropped (Postgres JSON cannot hold them).

/// Longest line in one event; longer lines are split.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// The unfinished line between chunks of output.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Takes a chunk of output and appends the lines it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<String>) {
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            self.partial.extend_from_slice(piece);
            let ends_line = piece.ends_with(b"\n");
            // The newline does not count towards the length.
            while self.partial.len() - usize::from(ends_line) > MAX_LINE_BYTES {
                let cut = char_boundary(&self.partial, MAX_LINE_BYTES);
                out.push(clean(&self.partial[..cut]));
                self.partial.drain(..cut);
            }
            if ends_line {
                out.push(clean(&self.partial));
                self.partial.clear();
            }
        }
    }

    /// The last line, if the output did not end with a newline.
    pub fn finish(self) -> Option<String> {
        (!self.partial.is_empty()).then(|| clean(&self.partial))
    }
}

/// The line as text: newline stripped, invalid UTF-8 replaced by U+FFFD, NULs dropped.
fn clean(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).replace('\0', "")
}

/// The largest cut at or below `max` that does not split a UTF-8 sequence.
fn char_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    // Continuation bytes look like 0b10xxxxxx; back up at most 3 of them.
    while cut > max.saturating_sub(3) && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(output: &[u8], chunk: usize) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for piece in output.chunks(chunk) {
            lines.feed(piece, &mut out);
        }
        out.extend(lines.finish());
        out
    }

    #[test]
    fn lines_are_cleaned() {
        assert_eq!(
            split(b"hello\ndos\r\na\0b\nbad \xff byte", 64),
            ["hello", "dos", "ab", "bad \u{fffd} byte"]
        );
        assert_eq!(split(b"\n\n", 1), ["", ""]);
    }

    #[test]
    fn long_lines_split_the_same_whatever_the_chunks() {
        let mut output = vec![b'x'; 20_000];
        output.push(b'\n');
        output.extend(vec![b'y'; MAX_LINE_BYTES]);
        output.extend(b"\n");
        output.extend("é".repeat(MAX_LINE_BYTES).as_bytes());
        let expected = split(&output, output.len());
        let lengths: Vec<usize> = expected.iter().map(String::len).collect();
        assert_eq!(lengths, [8192, 8192, 3616, 8192, 8192, 8192]);
        assert!(
            expected.iter().all(|line| !line.contains('\u{fffd}')),
            "no character is cut"
        );
        for chunk in [1, 7, 4096, 8191, 8192, 8193, 20_001] {
            assert_eq!(split(&output, chunk), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn cuts_fall_between_characters() {
        let text = "é".repeat(10);
        let bytes = text.as_bytes();
        assert_eq!(char_boundary(bytes, 5), 4);
        assert_eq!(char_boundary(b"abcdef", 4), 4);
        assert_eq!(char_boundary(b"ab", 4), 2);
    }
}
