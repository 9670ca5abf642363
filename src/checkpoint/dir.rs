//! The state directory: the chain of checkpoint files, their format (magic,
//! version, length, checksum, postcard), atomic writes, and the lock that keeps a
//! second process out.

use super::*;

const MAGIC: &[u8; 8] = b"CARDCKPT";
/// 2: held frames carry the votes of later frames (supported, contradicted).
/// 3: chains of change sets.
/// 4: the length of the `--rejects` file (version 3 is still read, as without one).
/// 5: the job's counters (versions 3 and 4 are still read, as without them).
const VERSION: u32 = 5;
const FILE_NAME: &str = "checkpoint";

/// One file of a chain, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Link {
    /// The whole state's generation: which change sets belong to it.
    generation: u64,
    /// 0 for the whole state, n for the n-th change set on top of it.
    sequence: u64,
    checkpoint: Checkpoint,
}

/// A [`Link`] to write, without copying the state.
#[derive(Serialize)]
struct LinkRef<'a> {
    generation: u64,
    sequence: u64,
    checkpoint: &'a Checkpoint,
}

/// The chain on disk that the next change set extends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chain {
    pub(super) generation: u64,
    changes: u64,
    whole_bytes: u64,
    change_bytes: u64,
}

impl Chain {
    /// Past this, a change set costs more to restore than a whole state to write.
    const MAX_CHANGES: u64 = 1000;
}

/// A `--state-dir`, locked for as long as this value (or a clone) lives: two
/// processes writing one checkpoint would each overwrite the other's state.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    _lock: Arc<File>,
    pub(super) chain: Arc<Mutex<Option<Chain>>>,
}

impl StateDir {
    /// Creates the directory if needed and takes its lock.
    pub fn open(dir: &Path) -> Result<StateDir, CheckpointError> {
        fs::create_dir_all(dir).map_err(|e| CheckpointError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let path = dir.join("lock");
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(CheckpointError::Locked {
                    path: dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        // Who holds it, for the error the next one gets.
        let pid = std::process::id().to_string();
        lock.set_len(0)
            .and_then(|_| lock.write_all(pid.as_bytes()))
            .and_then(|_| lock.flush())
            .map_err(io_err(&path))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: Arc::new(lock),
            chain: Arc::new(Mutex::new(None)),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn member_path(&self) -> PathBuf {
        self.dir.join("member")
    }

    /// If the last process on this directory died while in a consumer group (it never
    /// cleared its marker), the moment its group session ends at the latest: its last
    /// sign of life plus the session timeout. Joining before then lets some brokers
    /// (Tansu) hand every partition to the dead member.
    pub fn dead_member_session_end(&self, session: Duration) -> Option<SystemTime> {
        let touched = fs::metadata(self.member_path()).ok()?.modified().ok()?;
        Some(touched + session)
    }

    /// Marks this process as a group member, or refreshes the mark (at each checkpoint).
    pub fn mark_member(&self) -> Result<(), CheckpointError> {
        let path = self.member_path();
        fs::write(&path, std::process::id().to_string()).map_err(io_err(&path))
    }

    /// A clean exit: the group was left, nothing to wait out next time.
    pub fn clear_member(&self) {
        let _ = fs::remove_file(self.member_path());
    }

    /// The checkpoint for `identity`, if there is one: the whole state with every
    /// change set folded in. With `reset`, an existing checkpoint is discarded.
    pub fn load(&self, identity: &str, reset: bool) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path();
        *self.chain.lock() = None;
        if reset {
            self.remove_changes(|_, _| true)?;
            return match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::warn!(event = "checkpoint_discarded", path = %path.display());
                    Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CheckpointError::Io { path, source: e }),
            };
        }
        self.read_chain(Some(identity))
    }

    /// The checkpoint in this directory, whatever job wrote it (for inspection).
    pub fn inspect(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        self.read_chain(None)
    }

    fn read_chain(&self, identity: Option<&str>) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path();
        let Some((whole, whole_bytes)) = self.read_link(&path, identity)? else {
            return Ok(None);
        };
        let generation = whole.generation;
        let mut checkpoint = whole.checkpoint;
        let mut chain = Chain {
            generation,
            changes: 0,
            whole_bytes,
            change_bytes: 0,
        };
        loop {
            let path = self.change_path(generation, chain.changes + 1);
            let Some((link, bytes)) = self.read_link(&path, identity)? else {
                break;
            };
            let corrupt = |why: String| CheckpointError::Corrupt {
                path: path.clone(),
                why,
            };
            if link.generation != generation || link.sequence != chain.changes + 1 {
                return Err(corrupt(format!(
                    "it says it is change {} of generation {}",
                    link.sequence, link.generation
                )));
            }
            // Every field but the identity is the newest link's; taken apart so
            // that a field added later cannot be left at the whole state's value.
            let Checkpoint {
                identity: _,
                written_unix_ms,
                input,
                state,
                rejects_bytes,
                totals,
            } = link.checkpoint;
            checkpoint.state.absorb(state).map_err(corrupt)?;
            checkpoint.input = input;
            checkpoint.rejects_bytes = rejects_bytes;
            checkpoint.written_unix_ms = written_unix_ms;
            checkpoint.totals = totals;
            chain.changes += 1;
            chain.change_bytes += bytes;
        }
        // Change sets past a gap belong to no chain: the next save would write
        // below them, and a later load would fold them in.
        self.remove_changes(|g, n| g != generation || n > chain.changes)?;
        *self.chain.lock() = Some(chain);
        Ok(Some(checkpoint))
    }

    /// One link of the chain, checked; `None` if the file does not exist.
    fn read_link(
        &self,
        path: &Path,
        identity: Option<&str>,
    ) -> Result<Option<(Link, u64)>, CheckpointError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path)(e)),
        };
        let link = decode(&bytes).map_err(|why| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            why,
        })?;
        if let Some(identity) = identity
            && link.checkpoint.identity != identity
        {
            return Err(CheckpointError::Foreign {
                path: path.to_path_buf(),
                found: link.checkpoint.identity,
                expected: identity.to_string(),
            });
        }
        Ok(Some((link, bytes.len() as u64)))
    }

    pub(super) fn change_path(&self, generation: u64, sequence: u64) -> PathBuf {
        self.dir
            .join(format!("{FILE_NAME}.{generation}.{sequence}"))
    }

    /// Deletes the change sets for which `remove(generation, sequence)` holds.
    fn remove_changes(&self, remove: impl Fn(u64, u64) -> bool) -> Result<(), CheckpointError> {
        let entries = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("checkpoint.")) else {
                continue;
            };
            let Some((generation, sequence)) = rest.split_once('.') else {
                continue;
            };
            let (Ok(generation), Ok(sequence)) =
                (generation.parse::<u64>(), sequence.parse::<u64>())
            else {
                continue;
            };
            if remove(generation, sequence) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// Whether the next save should be a whole state: there is no chain to extend,
    /// or its change sets add up to more than the whole state.
    pub fn wants_whole(&self) -> bool {
        (*self.chain.lock())
            .is_none_or(|c| c.change_bytes >= c.whole_bytes || c.changes >= Chain::MAX_CHANGES)
    }

    /// Writes the next link atomically: temporary file, fsync, rename, fsync of the
    /// directory. A whole state starts a new generation and then deletes the old
    /// one's change sets.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<SaveStats, CheckpointError> {
        let started = Instant::now();
        let mut chain = self.chain.lock();
        let whole = checkpoint.state.whole;
        let (generation, sequence, path) = match (whole, *chain) {
            (true, previous) => {
                // Never a generation whose stale change sets may still lie about.
                let generation = previous.map_or(0, |c| c.generation + 1).max(unix_ms());
                (generation, 0, self.path())
            }
            (false, Some(c)) => (
                c.generation,
                c.changes + 1,
                self.change_path(c.generation, c.changes + 1),
            ),
            (false, None) => {
                return Err(CheckpointError::Write {
                    path: self.path(),
                    source: io::Error::other("a change set without a whole state to extend"),
                });
            }
        };
        let bytes = encode(&LinkRef {
            generation,
            sequence,
            checkpoint,
        });
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let failed = |source| CheckpointError::Write {
            path: path.clone(),
            source,
        };
        let mut f = File::create(&tmp).map_err(failed)?;
        f.write_all(&bytes).map_err(failed)?;
        f.sync_all().map_err(failed)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(failed)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
        let len = bytes.len() as u64;
        *chain = Some(match *chain {
            Some(c) if !whole => Chain {
                changes: sequence,
                change_bytes: c.change_bytes + len,
                ..c
            },
            _ => Chain {
                generation,
                changes: 0,
                whole_bytes: len,
                change_bytes: 0,
            },
        });
        if whole {
            // The new whole state is on disk: the old chain is no longer needed. A
            // crash before this leaves files that the next load ignores.
            self.remove_changes(|g, _| g != generation)?;
        }
        Ok(SaveStats {
            bytes: len,
            millis: started.elapsed().as_secs_f64() * 1000.0,
            whole,
        })
    }
}

fn encode(link: &LinkRef) -> Vec<u8> {
    let payload = postcard::to_stdvec(link).expect("a checkpoint always serializes");
    crate::sealed::seal(MAGIC, VERSION, &payload)
}

fn decode(bytes: &[u8]) -> Result<Link, String> {
    let (version, payload) = crate::sealed::open(MAGIC, "checkpoint", bytes)?;
    let decoded = match version {
        3 => postcard::from_bytes::<LinkV3>(payload).map(|v3| Link::from(LinkV4::from(v3))),
        4 => postcard::from_bytes::<LinkV4>(payload).map(Link::from),
        VERSION => postcard::from_bytes(payload),
        _ => {
            return Err(format!(
                "format version {version}, this Cardinal reads versions 3 to {VERSION}"
            ));
        }
    };
    decoded.map_err(|e| format!("cannot decode: {e}"))
}

/// A version 3 link: the same, without the rejects file's length.
#[derive(Deserialize)]
struct LinkV3 {
    generation: u64,
    sequence: u64,
    checkpoint: CheckpointV3,
}

#[derive(Deserialize)]
struct CheckpointV3 {
    identity: String,
    written_unix_ms: u64,
    input: InputPosition,
    state: Snapshot<HeldFrame>,
}

impl From<LinkV3> for LinkV4 {
    fn from(v3: LinkV3) -> LinkV4 {
        let c = v3.checkpoint;
        LinkV4 {
            generation: v3.generation,
            sequence: v3.sequence,
            checkpoint: CheckpointV4 {
                identity: c.identity,
                written_unix_ms: c.written_unix_ms,
                input: c.input,
                state: c.state,
                rejects_bytes: None,
            },
        }
    }
}

/// A version 4 link: the same, without the job's counters.
#[derive(Deserialize)]
struct LinkV4 {
    generation: u64,
    sequence: u64,
    checkpoint: CheckpointV4,
}

#[derive(Deserialize)]
struct CheckpointV4 {
    identity: String,
    written_unix_ms: u64,
    input: InputPosition,
    state: Snapshot<HeldFrame>,
    rejects_bytes: Option<u64>,
}

impl From<LinkV4> for Link {
    fn from(v4: LinkV4) -> Link {
        let c = v4.checkpoint;
        Link {
            generation: v4.generation,
            sequence: v4.sequence,
            checkpoint: Checkpoint {
                identity: c.identity,
                written_unix_ms: c.written_unix_ms,
                input: c.input,
                state: c.state,
                rejects_bytes: c.rejects_bytes,
                totals: None,
            },
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |e| CheckpointError::Io { path, source: e }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 4 link is a version 5 one without the counters, its last field:
    /// postcard writes fields in order, so cutting the final `None` makes one.
    #[test]
    fn a_version_4_link_loads_without_counters() {
        let mut checkpoint = super::super::tests::sample();
        checkpoint.totals = None;
        let link = LinkRef {
            generation: 2,
            sequence: 1,
            checkpoint: &checkpoint,
        };
        let v5 = postcard::to_stdvec(&link).unwrap();
        assert_eq!(v5.last(), Some(&0), "`None` is written last");
        let v4 = crate::sealed::seal(MAGIC, 4, &v5[..v5.len() - 1]);
        let loaded = decode(&v4).unwrap();
        assert_eq!((loaded.generation, loaded.sequence), (2, 1));
        assert_eq!(loaded.checkpoint, checkpoint);
        assert_eq!(loaded.checkpoint.rejects_bytes, Some(7));
        // And a version this build does not know is refused, not guessed at.
        let v9 = crate::sealed::seal(MAGIC, 9, &v5);
        assert!(decode(&v9).unwrap_err().contains("format version 9"));
    }
}
