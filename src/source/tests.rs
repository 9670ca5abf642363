//! Chunking: whole lines, short reads, oversized lines, resuming at an offset.

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
    let mut line = 0;
    for c in Chunker::new(Trickle { data, step }, "t", chunk) {
        let c = c.unwrap();
        if let Some(first) = c.first_line {
            line = first;
        }
        for l in c.lines() {
            out.push((line, String::from_utf8(l.to_vec()).unwrap()));
            line += 1;
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

/// Memory in flight follows bytes only if a chunk's lines are bounded too: each
/// becomes a parse result of tens of bytes, so a megabyte of empty lines must not
/// be one chunk.
#[test]
fn chunks_hold_at_most_the_line_limit_and_lose_no_line() {
    let text: String = (0..50)
        .map(|i| "x".repeat(i % 4) + "\n")
        .collect::<String>()
        + "tail";
    let want: Vec<(u64, String)> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.to_string()))
        .collect();
    for max_lines in [1, 2, 3, 7, 49, 50, 51, 1000] {
        for step in [1, 5, 64, 4096] {
            for chunk in [1, 16, 1024] {
                let chunker = Chunker::new(
                    Trickle {
                        data: text.as_bytes(),
                        step,
                    },
                    "t",
                    chunk,
                )
                .max_lines(max_lines);
                let chunks: Vec<Chunk> = chunker.map(Result::unwrap).collect();
                for c in &chunks {
                    assert!(
                        c.lines().count() <= max_lines,
                        "a chunk of {} lines, limit {max_lines}",
                        c.lines().count()
                    );
                }
                let mut got = vec![];
                let mut line = 0;
                for c in &chunks {
                    line = c.first_line.unwrap_or(line);
                    for l in c.lines() {
                        got.push((line, String::from_utf8(l.to_vec()).unwrap()));
                        line += 1;
                    }
                }
                assert_eq!(got, want, "limit {max_lines} step {step} chunk {chunk}");
            }
        }
    }
    // The default limit, on a megabyte of empty lines read at once.
    let empty = vec![b'\n'; 1 << 20];
    let chunks: Vec<Chunk> = Chunker::new(&empty[..], "t", CHUNK_BYTES)
        .map(Result::unwrap)
        .collect();
    assert!(chunks.iter().all(|c| c.lines().count() <= MAX_CHUNK_FRAMES));
    assert_eq!(
        chunks.iter().map(|c| c.lines().count()).sum::<usize>(),
        1 << 20
    );
}

/// Absolute line numbers from chunks, as the aggregating stage computes them.
fn numbered(chunks: impl Iterator<Item = Chunk>) -> Vec<(u64, Vec<u8>)> {
    let mut line = 0;
    let mut out = vec![];
    for c in chunks {
        if let Some(first) = c.first_line {
            line = first;
        }
        for (_, _, l) in c.frames() {
            out.push((line, l.to_vec()));
            line += 1;
        }
    }
    out
}

#[test]
fn line_numbers_do_not_depend_on_chunk_sizes_and_resume_where_told() {
    let text: String = (0..500)
        .map(|i| format!("{{\"n\":{}}}\n", "x".repeat(i % 37)))
        .collect::<String>()
        + "tail";
    let reference = numbered(Chunker::new(text.as_bytes(), "f", 1 << 20).map(Result::unwrap));
    assert_eq!(reference.len(), 501);
    assert_eq!(reference[500], (501, b"tail".to_vec()));
    for chunk in [1, 7, 64] {
        let got = numbered(Chunker::new(text.as_bytes(), "f", chunk).map(Result::unwrap));
        assert_eq!(got, reference, "chunk size {chunk}");
    }
    let second_line = text.find('\n').unwrap() as u64 + 1;
    let mut resumed = Chunker::new(text.as_bytes(), "f", 64);
    resumed.skip_to(second_line, 2).unwrap();
    let rest = numbered(resumed.map(Result::unwrap));
    assert_eq!(rest, reference[1..]);
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
            &text[c.offset as usize..c.offset as usize + c.data().len()],
            c.data()
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
