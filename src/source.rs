//! Sources: where frames come from, cut into chunks of whole lines.
//!
//! A chunk is the unit of parallel parsing. Files are read in large chunks for
//! throughput; a slow source (a pipe, a terminal) yields whatever complete lines it
//! has as soon as a read comes back short, so `tail -f | cardinal count` reports
//! without waiting for a full chunk. `.gz` files are decompressed on the fly.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// Target chunk size: large enough to amortise hand-offs between threads, small
/// enough that several fit in cache-friendly flight.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Where an input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    /// `-` means stdin, as in most Unix tools.
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    /// How the input is named in errors, summaries and rejects.
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_string(),
            Input::File(p) => p.display().to_string(),
        }
    }

    /// Opens the input, decompressing `.gz` files.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, SourceError> {
        match self {
            Input::Stdin => Ok(Box::new(io::stdin())),
            Input::File(p) => {
                let f = File::open(p).map_err(|e| SourceError::Open {
                    path: p.clone(),
                    source: e,
                })?;
                if is_gzip(p) {
                    Ok(Box::new(flate2::read::MultiGzDecoder::new(
                        io::BufReader::with_capacity(1 << 16, f),
                    )))
                } else {
                    Ok(Box::new(f))
                }
            }
        }
    }
}

fn is_gzip(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read {name} after line {line}: {source}")]
    Read {
        name: String,
        line: u64,
        source: io::Error,
    },
}

/// Whole lines from one input, with their position in it.
#[derive(Debug)]
pub struct Chunk {
    /// The input's name, shared by all its chunks.
    pub source: Arc<str>,
    /// 1-based number of the first line in `data`.
    pub first_line: u64,
    /// Byte offset of `data` in the (decompressed) input.
    pub offset: u64,
    /// Complete lines, each ending in `\n` except perhaps the input's last.
    pub data: Vec<u8>,
}

impl Chunk {
    /// Lines without their terminator (`\r` is left for the parser, which allows it).
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let data = self.data.strip_suffix(b"\n").unwrap_or(&self.data);
        let empty = self.data.is_empty();
        data.split(|&b| b == b'\n').filter(move |_| !empty)
    }
}

/// Cuts a reader into chunks of whole lines.
pub struct Chunker<R> {
    reader: R,
    source: Arc<str>,
    carry: Vec<u8>,
    next_line: u64,
    offset: u64,
    chunk_bytes: usize,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R, source: &str, chunk_bytes: usize) -> Self {
        Chunker {
            reader,
            source: Arc::from(source),
            carry: Vec::new(),
            next_line: 1,
            offset: 0,
            chunk_bytes,
            eof: false,
        }
    }

    fn cut(&mut self, upto: usize) -> Chunk {
        let rest = self.carry.split_off(upto);
        let data = std::mem::replace(&mut self.carry, rest);
        let lines =
            memchr::memchr_iter(b'\n', &data).count() as u64 + u64::from(!data.ends_with(b"\n"));
        let chunk = Chunk {
            source: self.source.clone(),
            first_line: self.next_line,
            offset: self.offset,
            data,
        };
        self.next_line += lines;
        self.offset += chunk.data.len() as u64;
        chunk
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = Result<Chunk, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.eof {
                if self.carry.is_empty() {
                    return None;
                }
                let all = self.carry.len();
                return Some(Ok(self.cut(all)));
            }
            let have = self.carry.len();
            let want = self.chunk_bytes.max(have + 4096);
            self.carry.resize(want, 0);
            let n = loop {
                match self.reader.read(&mut self.carry[have..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.carry.truncate(have);
                        self.eof = true;
                        return Some(Err(SourceError::Read {
                            name: self.source.to_string(),
                            line: self.next_line.saturating_sub(1),
                            source: e,
                        }));
                    }
                }
            };
            self.carry.truncate(have + n);
            if n == 0 {
                self.eof = true;
                continue;
            }
            let full = self.carry.len() >= self.chunk_bytes;
            let short_read = n < want - have;
            if (full || short_read)
                && let Some(last_nl) = memchr::memrchr(b'\n', &self.carry)
            {
                return Some(Ok(self.cut(last_nl + 1)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `step` bytes per read, like a pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn collect(data: &[u8], step: usize, chunk: usize) -> Vec<(u64, String)> {
        let mut out = vec![];
        for c in Chunker::new(Trickle { data, step }, "t", chunk) {
            let c = c.unwrap();
            for (i, l) in c.lines().enumerate() {
                out.push((
                    c.first_line + i as u64,
                    String::from_utf8(l.to_vec()).unwrap(),
                ));
            }
        }
        out
    }

    #[test]
    fn lines_and_numbers_survive_any_read_pattern() {
        let text = "a\nbb\n\nccc\r\ndddd\nlast-without-newline";
        let want: Vec<(u64, String)> = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.to_string()))
            .collect();
        for step in [1, 2, 3, 7, 100] {
            for chunk in [1, 4, 16, 1024] {
                assert_eq!(
                    collect(text.as_bytes(), step, chunk),
                    want,
                    "step {step} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn trailing_newline_makes_no_extra_line() {
        assert_eq!(collect(b"x\ny\n", 100, 1024).len(), 2);
        assert!(collect(b"", 100, 1024).is_empty());
    }

    #[test]
    fn offsets_point_at_each_chunk() {
        let text = b"one\ntwo\nthree\n";
        let chunks: Vec<Chunk> = Chunker::new(
            Trickle {
                data: text,
                step: 4,
            },
            "t",
            4,
        )
        .map(Result::unwrap)
        .collect();
        for c in &chunks {
            assert_eq!(
                &text[c.offset as usize..c.offset as usize + c.data.len()],
                &c.data[..]
            );
        }
    }

    #[test]
    fn gzip_is_decompressed_and_missing_files_are_named() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        enc.write_all(b"{\"uid\":\"a\",\"ts\":1}\n").unwrap();
        enc.finish().unwrap();
        let mut s = String::new();
        Input::File(p)
            .open()
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "{\"uid\":\"a\",\"ts\":1}\n");
        let missing = Input::File(dir.path().join("nope.json"));
        let err = missing.open().err().unwrap().to_string();
        assert!(err.contains("nope.json"), "{err}");
    }
}
