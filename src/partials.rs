//! Partial results, to count history on many machines: `count --partials-out DIR`
//! writes every window's counter state (the users, not their number) at the end of
//! its share of the files, and `cardinal merge` unions the partials of every share
//! into the results one `count` over all the files would give. Exact sets union
//! exactly (8 bytes per user per window per share); HLL sketches union as
//! DataSketches defines it (a few KiB per window, whatever the users).
//!
//! A window is in a share's partial whether or not it was complete in that share;
//! merging is what makes it final. Lateness is judged within each share, so shares
//! should be time-ordered streams (a day's files each), as a backfill's are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregator::WindowResult;
use crate::counter::{Counter, CounterState, Exact, Hll, HllConfig};
use crate::pipeline::{Hooks, PipelineError, StateView};
use crate::window::{Calendar, Granularity, Span};

/// Bumped when the file layout changes: older files are refused, not misread.
/// 2: sealed (checksummed, `crate::sealed`), and each share names itself.
const FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"CARDPART";
/// Partial files end with this, so that a directory can hold other things.
pub const EXTENSION: &str = "cpart";

/// What partials must agree on to be merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub windows: Vec<Granularity>,
    pub tz: String,
    /// `exact`, or `hll/LG_K`.
    pub counter: String,
}

impl Shape {
    /// `--windows hour,minute` counts what `minute,hour` counts: the set is what
    /// must agree, not the order it was typed in.
    fn normalized(mut self) -> Shape {
        self.windows.sort();
        self.windows.dedup();
        self
    }
}

/// As the `count` options that give it, so that a refused merge says what to type.
impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let windows: Vec<&str> = self.windows.iter().map(|g| g.name()).collect();
        write!(f, "--windows {} --tz {}", windows.join(","), self.tz)?;
        match self.counter.split_once('/') {
            Some(("hll", k)) => write!(f, " --counter hll --precision {k}"),
            _ => write!(f, " --counter {}", self.counter),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartialFile {
    shape: Shape,
    /// Which share this is: the same inputs counted again (a re-run, a copied
    /// file, the same file named twice) give the same, and a merge takes one.
    share: String,
    /// What the share read, for the merge's summary.
    inputs: Vec<String>,
    windows: Vec<PartialWindow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartialWindow {
    granularity: Granularity,
    start: i64,
    end: i64,
    frames: u64,
    counter: CounterState,
}

#[derive(Debug, Error)]
pub enum PartialsError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: String },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: String },
    #[error("{path} is not a partial-results file of this version ({error})")]
    Format { path: PathBuf, error: String },
    #[error(
        "{path} was counted with `{theirs}`, {first} with `{ours}`: only partials of the same windows, zone and counter merge"
    )]
    Mismatch {
        path: PathBuf,
        first: PathBuf,
        theirs: Box<Shape>,
        ours: Box<Shape>,
    },
    #[error("no partial-results files (*.{EXTENSION}) in {0}")]
    Empty(String),
    #[error(
        "{path} and {first} hold the same share ({share}: the same inputs counted twice, or a copy): merge one of them"
    )]
    Duplicate {
        path: PathBuf,
        first: PathBuf,
        share: String,
    },
}

/// A share's identity: its inputs by name, size and modification time (stdin,
/// which cannot be told again, by this process and moment).
fn share_of(inputs: &[String]) -> String {
    use std::os::unix::fs::MetadataExt;
    let described: Vec<String> = (inputs.iter())
        .map(|i| match std::fs::metadata(i) {
            Ok(m) if i != "-" && m.is_file() => format!("{i}:{}:{}", m.len(), m.mtime()),
            _ => format!(
                "{i}:{}:{}",
                std::process::id(),
                crate::checkpoint::unix_ms()
            ),
        })
        .collect();
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(described.join("\n").as_bytes())
    )
}

/// Collects the final state of every window of a `count`, and writes it at the end.
pub struct PartialsOut {
    path: PathBuf,
    shape: Shape,
    share: String,
    inputs: Vec<String>,
    windows: BTreeMap<(i64, Granularity, i64), PartialWindow>,
}

impl PartialsOut {
    /// The file goes into `dir`, named after this host and process so that shares
    /// counted at once never collide.
    pub fn new(dir: &Path, shape: Shape, inputs: Vec<String>) -> Result<Self, PartialsError> {
        std::fs::create_dir_all(dir).map_err(|e| PartialsError::Write {
            path: dir.to_path_buf(),
            error: e.to_string(),
        })?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let name = format!(
            "partial-{host}-{}-{}.{EXTENSION}",
            std::process::id(),
            crate::checkpoint::unix_ms()
        );
        // Written only at the end of input: find out now, not after a day's backfill,
        // that it cannot be (a read-only file system, no permission).
        let probe = dir.join(format!(".{name}.probe"));
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| PartialsError::Write {
                path: dir.to_path_buf(),
                error: e.to_string(),
            })?;
        Ok(PartialsOut {
            path: dir.join(name),
            share: share_of(&inputs),
            shape,
            inputs,
            windows: BTreeMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    fn write(&self) -> Result<(), PartialsError> {
        let file = PartialFile {
            shape: self.shape.clone(),
            share: self.share.clone(),
            inputs: self.inputs.clone(),
            windows: self.windows.values().cloned().collect(),
        };
        let payload = postcard::to_stdvec(&file).map_err(|e| PartialsError::Write {
            path: self.path.clone(),
            error: e.to_string(),
        })?;
        let bytes = crate::sealed::seal(MAGIC, FORMAT, &payload);
        // Whole or not at all: a merge must never read half a file.
        let tmp = self.path.with_extension("tmp");
        let write = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.path));
        write.map_err(|e| PartialsError::Write {
            path: self.path.clone(),
            error: e.to_string(),
        })
    }
}

impl Hooks for PartialsOut {
    fn results(&mut self, windows: &[WindowResult], _: &Calendar) -> Result<(), PipelineError> {
        for w in windows {
            let Some(counter) = &w.state else {
                continue;
            };
            // A correction replaces the earlier version: it holds every user so far.
            self.windows.insert(
                (w.span.end, w.granularity, w.span.start),
                PartialWindow {
                    granularity: w.granularity,
                    start: w.span.start,
                    end: w.span.end,
                    frames: w.frames,
                    counter: counter.clone(),
                },
            );
        }
        Ok(())
    }

    fn finished(&mut self, _: &mut dyn StateView, complete: bool) -> Result<(), PipelineError> {
        if !complete {
            // Stopped early: a partial of part of a share would merge into wrong counts.
            return Err(PipelineError::Live(format!(
                "stopped before the end of the input: no partial results written ({} not created)",
                self.path.display()
            )));
        }
        self.write().map_err(|e| PipelineError::Live(e.to_string()))
    }
}

/// The merged results, with what they came from.
pub struct Merged {
    pub calendar: Calendar,
    pub windows: Vec<WindowResult>,
    pub files: usize,
}

/// `cardinal merge`: reads every partial file under `paths` (files, or directories
/// of `*.cpart`), checks they agree, and unions them window by window.
pub fn merge(paths: &[PathBuf], keep_state: bool) -> Result<Merged, PartialsError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| PartialsError::Read {
                path: p.clone(),
                error: e.to_string(),
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == EXTENSION))
                .collect();
            if found.is_empty() {
                return Err(PartialsError::Empty(p.display().to_string()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut first: Option<(PathBuf, Shape)> = None;
    let mut shares: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut all: Vec<PartialWindow> = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).map_err(|e| PartialsError::Read {
            path: path.clone(),
            error: e.to_string(),
        })?;
        let format_error = |error: String| PartialsError::Format {
            path: path.clone(),
            error,
        };
        let (format, payload) =
            crate::sealed::open(MAGIC, "partial-results file", &bytes).map_err(format_error)?;
        if format != FORMAT {
            return Err(format_error(format!(
                "format {format}, this build reads {FORMAT}"
            )));
        }
        let file: PartialFile =
            postcard::from_bytes(payload).map_err(|e| format_error(e.to_string()))?;
        if let Some(first) = shares.insert(file.share.clone(), path.clone()) {
            return Err(PartialsError::Duplicate {
                path: path.clone(),
                first,
                share: file.share,
            });
        }
        let file_shape = file.shape.normalized();
        match &first {
            None => first = Some((path.clone(), file_shape)),
            Some((first_path, shape)) if *shape != file_shape => {
                return Err(PartialsError::Mismatch {
                    path: path.clone(),
                    first: first_path.clone(),
                    theirs: Box::new(file_shape),
                    ours: Box::new(shape.clone()),
                });
            }
            Some(_) => {}
        }
        all.extend(file.windows);
    }
    let Some((first_path, shape)) = first else {
        return Err(PartialsError::Empty("the arguments".into()));
    };
    let bad = |error: String| PartialsError::Format {
        path: first_path.clone(),
        error,
    };
    let calendar = Calendar::for_zone(&shape.tz).map_err(|e| bad(e.to_string()))?;
    let windows = match shape.counter.split_once('/') {
        None if shape.counter == "exact" => union::<Exact>(all, &(), keep_state),
        Some(("hll", k)) => {
            let lg_k = k
                .parse()
                .map_err(|_| bad(format!("counter {:?}", shape.counter)))?;
            union::<Hll>(all, &HllConfig { lg_k }, keep_state)
        }
        _ => return Err(bad(format!("unknown counter {:?}", shape.counter))),
    }
    .map_err(bad)?;
    Ok(Merged {
        calendar,
        windows,
        files: files.len(),
    })
}

fn union<C: Counter>(
    parts: Vec<PartialWindow>,
    config: &C::Config,
    keep_state: bool,
) -> Result<Vec<WindowResult>, String> {
    let mut grouped: BTreeMap<(i64, Granularity, i64), (Vec<C>, u64)> = BTreeMap::new();
    for p in parts {
        let counter = C::load(p.counter, config)?;
        let (counters, frames) = grouped.entry((p.end, p.granularity, p.start)).or_default();
        counters.push(counter);
        *frames = frames.checked_add(p.frames).ok_or_else(|| {
            format!(
                "{} frames overflow at {} {}",
                p.granularity, p.granularity, p.start
            )
        })?;
    }
    let merged: Vec<_> = grouped
        .into_iter()
        .map(|((end, g, start), (counters, frames))| {
            // A window whose counters will not union is an error, not a gap.
            let c = C::union(counters)
                .ok_or_else(|| format!("the {g} window at {start} does not union"))?;
            Ok(((end, g, start), (c, frames)))
        })
        .collect::<Result<_, String>>()?;
    Ok(merged
        .into_iter()
        .map(|((end, granularity, start), (c, frames))| WindowResult {
            granularity,
            span: Span { start, end },
            unique_users: c.count(),
            frames,
            version: 1,
            is_final: true,
            rse: c.rse(),
            state: keep_state.then(|| c.save()),
        })
        .collect())
}
