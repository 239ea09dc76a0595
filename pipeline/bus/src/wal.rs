//! The in-process bus's write-ahead log: what the receiver acknowledged survives a
//! `kill -9` (and, with `fsync`, a power cut).
//!
//! Each topic is a directory of numbered segment files of frames — length, CRC-32 of
//! the body, body (partition, offset, key length, key, payload) — for all its
//! partitions, and a `committed.json` of each partition's consumer groups' next
//! offsets. One file per topic, not per partition: a group commit then syncs one file
//! (`fdatasync` of four files costs four times one here). A publish appends its frames
//! in one write and, with [`Durability::Fsync`], waits for the group commit: one thread
//! `fdatasync`s every file written since its last round — rounds at least
//! `commit_interval` apart — so the publishes of a round share one sync. At start-up
//! the segments are read back from each partition's lowest committed offset; a torn
//! frame at the end (a crash mid-write) ends the log there. A segment is deleted once
//! every record in it is acknowledged by every group (or dropped by retention) and the
//! acknowledgement is on disk.
//!
//! A write that fails (disk full) is undone — the file is cut back to where it was —
//! and the publish answers [`Error::Unavailable`], so the receiver says 503 /
//! UNAVAILABLE and nothing it accepted before is touched.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sqlvigil_core::{Error, Record, Result};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What an acknowledged publish survives (`bus.durability`; like Vector's buffers).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// On disk (`fdatasync`, group commit) before the receiver answers: survives a
    /// crash of the process and of the machine.
    #[default]
    Fsync,
    /// Written to the OS before the receiver answers: survives a crash of the
    /// process, not of the machine.
    OsCache,
    /// Memory only: a crash loses what the store has not flushed yet.
    None,
}

/// Where the log lives and how it commits.
#[derive(Debug, Clone, PartialEq)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// Least time between two group commits (`fsync` only; 0: back to back).
    pub commit_interval: Duration,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
}

/// Frame header: body length, CRC-32 of the body.
const FRAME_HEADER: usize = 8;
/// Body header: partition, offset, key length.
const BODY_HEADER: usize = 16;
const COMMITTED: &str = "committed.json";

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A topic name as a directory name: anything but `[A-Za-z0-9._-]` as `%XX`.
fn dir_name(topic: &str) -> String {
    topic
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn topic_name(dir: &str) -> Option<String> {
    let bytes = dir.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(dir.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn frame(partition: u32, offset: u64, record: &Record, out: &mut Vec<u8>) {
    let body_len = BODY_HEADER + record.key.len() + record.payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&record.key);
    out.extend_from_slice(&record.payload);
    let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back: where it was, and itself.
struct Frame {
    partition: u32,
    offset: u64,
    record: Record,
}

/// The frames of a segment's bytes, and how many bytes of it are whole frames.
fn read_frames(bytes: &Bytes) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    let le = |i: usize, n: usize| -> Option<u64> {
        let b = bytes.get(i..i + n)?;
        Some(b.iter().rev().fold(0u64, |acc, x| acc << 8 | *x as u64))
    };
    while let (Some(len), Some(crc)) = (le(at, 4), le(at + 4, 4)) {
        let (body, len) = (at + FRAME_HEADER, len as usize);
        let Some(end) = body
            .checked_add(len)
            .filter(|&e| e <= bytes.len() && len >= BODY_HEADER)
        else {
            break;
        };
        if crc32fast::hash(&bytes[body..end]) as u64 != crc {
            break;
        }
        let (Some(partition), Some(offset), Some(key_len)) =
            (le(body, 4), le(body + 4, 8), le(body + 12, 4))
        else {
            break;
        };
        let key_at = body + BODY_HEADER;
        if key_len as usize > end - key_at {
            break;
        }
        let payload_at = key_at + key_len as usize;
        frames.push(Frame {
            partition: partition as u32,
            offset,
            record: Record {
                key: bytes.slice(key_at..payload_at),
                payload: bytes.slice(payload_at..end),
            },
        });
        at = end;
    }
    (frames, at)
}

/// One segment file: its number, and the newest offset of each partition in it.
struct Segment {
    seq: u64,
    newest: HashMap<u32, u64>,
}

/// A topic's log: one file being written for all its partitions (so a group commit
/// syncs one file per topic, not one per partition).
pub(crate) struct TopicLog {
    dir: PathBuf,
    state: Mutex<LogState>,
}

struct LogState {
    file: Arc<File>,
    /// Bytes in the current segment (the last of `segments`).
    len: u64,
    segments: VecDeque<Segment>,
    /// Per partition: every record before this offset is acknowledged by every group
    /// (or dropped by retention) — what segment deletion goes by.
    done_below: HashMap<u32, u64>,
    /// Per partition, each group's next offset (as saved in `committed.json`).
    committed: BTreeMap<u32, HashMap<String, u64>>,
}

impl TopicLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.log"))
    }
}

/// What one partition's log held at start-up.
#[derive(Default)]
pub(crate) struct Replayed {
    /// Offset of `records[0]`.
    pub base: u64,
    pub records: VecDeque<Record>,
    pub committed: HashMap<String, u64>,
}

impl Replayed {
    fn push(&mut self, dir: &Path, partition: u32, f: Frame) {
        let next = self.base + self.records.len() as u64;
        if f.offset < next {
            return;
        }
        if f.offset > next && !self.records.is_empty() {
            // Only a damaged segment leaves a gap; offsets stay contiguous by keeping
            // the newer records.
            tracing::error!(
                "write-ahead log {}: partition {partition} offsets {next}..{} are missing (a damaged segment); dropping the {} record(s) before them",
                dir.display(),
                f.offset,
                self.records.len()
            );
            self.records.clear();
        }
        if self.records.is_empty() {
            self.base = f.offset;
        }
        self.records.push_back(f.record);
    }
}

/// One partition's share of a publish: its first offset and its records.
pub(crate) struct Share<'a> {
    pub partition: u32,
    pub first: u64,
    pub records: &'a [Record],
}

/// See the module docs.
pub(crate) struct Wal {
    cfg: WalConfig,
    syncer: Option<Arc<Syncer>>,
    /// Whether the last write failed (a line is logged when this changes).
    failing: AtomicBool,
}

impl Wal {
    pub fn open(cfg: WalConfig) -> Result<Wal> {
        std::fs::create_dir_all(&cfg.dir).map_err(io(format!(
            "write-ahead log: creating {}",
            cfg.dir.display()
        )))?;
        let syncer =
            (cfg.durability == Durability::Fsync).then(|| Syncer::start(cfg.commit_interval));
        Ok(Wal {
            cfg,
            syncer,
            failing: AtomicBool::new(false),
        })
    }

    /// The topics that have a directory in the log.
    pub fn topics(&self) -> Result<Vec<String>> {
        let context = || format!("write-ahead log: listing {}", self.cfg.dir.display());
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.cfg.dir).map_err(io(context()))? {
            let entry = entry.map_err(io(context()))?;
            if let Some(name) = entry.file_name().to_str().and_then(topic_name) {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Open (creating) a topic's log and read back what its `partitions` hold.
    pub fn open_topic(&self, topic: &str, partitions: u32) -> Result<(TopicLog, Vec<Replayed>)> {
        let dir = self.cfg.dir.join(dir_name(topic));
        let context = format!("write-ahead log: opening {}", dir.display());
        std::fs::create_dir_all(&dir).map_err(io(&context))?;
        let committed = read_committed(&dir)?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&context))? {
            let name = entry.map_err(io(&context))?.file_name();
            let seq = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            seqs.extend(seq);
        }
        seqs.sort_unstable();
        let mut replayed: Vec<Replayed> = (0..partitions)
            .map(|p| {
                let groups = committed.get(&p).cloned().unwrap_or_default();
                let start = groups.values().min().copied().unwrap_or(0);
                Replayed {
                    base: start,
                    records: VecDeque::new(),
                    committed: groups,
                }
            })
            .collect();
        let mut segments = VecDeque::new();
        for (i, seq) in seqs.iter().enumerate() {
            let path = dir.join(format!("{seq:020}.log"));
            let frames = read_segment(&path, i + 1 == seqs.len())?;
            let mut newest: HashMap<u32, u64> = HashMap::new();
            for f in frames {
                let e = newest.entry(f.partition).or_insert(f.offset);
                *e = (*e).max(f.offset);
                let Some(r) = replayed.get_mut(f.partition as usize) else {
                    let start = committed
                        .get(&f.partition)
                        .and_then(|g| g.values().min().copied())
                        .unwrap_or(0);
                    if f.offset >= start {
                        return Err(Error::Config(format!(
                            "bus.partitions is {partitions}, but the write-ahead log holds unconsumed records of topic `{topic}` in partition {}: set bus.partitions back until they are consumed",
                            f.partition
                        )));
                    }
                    continue;
                };
                r.push(&dir, f.partition, f);
            }
            segments.push_back(Segment { seq: *seq, newest });
        }
        // The next offset of a partition also follows what was acknowledged, in case its
        // segments are gone.
        for (p, r) in replayed.iter_mut().enumerate() {
            let newest = segments
                .iter()
                .filter_map(|s| s.newest.get(&(p as u32)))
                .max()
                .map_or(0, |o| o + 1);
            let acked = r.committed.values().max().copied().unwrap_or(0);
            if r.records.is_empty() {
                r.base = r.base.max(newest).max(acked);
            }
        }
        let done_below = replayed
            .iter()
            .enumerate()
            .map(|(p, r)| (p as u32, r.base))
            .collect();
        let seq = seqs.last().map_or(0, |s| s + 1);
        let file = self.create_segment(&dir, seq)?;
        segments.push_back(Segment {
            seq,
            newest: HashMap::new(),
        });
        let log = TopicLog {
            dir,
            state: Mutex::new(LogState {
                file,
                len: 0,
                segments,
                done_below,
                committed,
            }),
        };
        {
            let mut state = log.lock();
            self.drop_done(&log, &mut state);
        }
        Ok((log, replayed))
    }

    fn create_segment(&self, dir: &Path, seq: u64) -> Result<Arc<File>> {
        let path = dir.join(format!("{seq:020}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("write-ahead log: creating {}", path.display())))?;
        if self.cfg.durability == Durability::Fsync {
            sync_dir(dir)?;
        }
        Ok(Arc::new(file))
    }

    /// Append a publish's records, all partitions in one write; the sync ticket to wait
    /// for (`None`: no sync). On failure the segment is cut back to where it was and
    /// nothing is appended.
    pub fn append(&self, log: &TopicLog, shares: &[Share<'_>]) -> Result<Option<u64>> {
        let mut state = log.lock();
        if state.len >= self.cfg.segment_bytes {
            let seq = state.segments.back().map_or(0, |s| s.seq + 1);
            // No room for a new segment is no room: retry later, like a failed write.
            state.file = self
                .create_segment(&log.dir, seq)
                .map_err(|e| Error::Unavailable(format!("{e}; retry later")))?;
            state.len = 0;
            state.segments.push_back(Segment {
                seq,
                newest: HashMap::new(),
            });
        }
        let size = shares
            .iter()
            .flat_map(|s| s.records.iter())
            .map(|r| FRAME_HEADER + BODY_HEADER + r.key.len() + r.payload.len())
            .sum();
        let mut buf = Vec::with_capacity(size);
        for s in shares {
            for (i, r) in s.records.iter().enumerate() {
                frame(s.partition, s.first + i as u64, r, &mut buf);
            }
        }
        if let Err(e) = (&*state.file).write_all(&buf) {
            let seq = state.segments.back().map_or(0, |s| s.seq);
            return Err(self.refuse(&log.segment_path(seq), &state, e));
        }
        state.len += buf.len() as u64;
        if let Some(current) = state.segments.back_mut() {
            for s in shares.iter().filter(|s| !s.records.is_empty()) {
                current
                    .newest
                    .insert(s.partition, s.first + s.records.len() as u64 - 1);
            }
        }
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("write-ahead log: writing again, data is accepted");
        }
        Ok(self.syncer.as_ref().map(|s| s.mark(&state.file)))
    }

    /// A failed write: cut the partial frame back off, say so once, refuse.
    fn refuse(&self, path: &Path, state: &LogState, e: std::io::Error) -> Error {
        if let Err(cut) = state.file.set_len(state.len) {
            tracing::error!(
                "write-ahead log {}: cannot cut back a failed write: {cut}",
                path.display()
            );
        }
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "write-ahead log {}: {e}; refusing data (503 / UNAVAILABLE) until it can be written",
                path.display()
            );
        }
        Error::Unavailable(format!(
            "write-ahead log {}: {e}; retry later",
            path.display()
        ))
    }

    /// Wait until the sync of `ticket` is done.
    pub async fn wait(&self, ticket: u64) -> Result<()> {
        match &self.syncer {
            Some(s) => s.wait(ticket).await,
            None => Ok(()),
        }
    }

    /// Save `partition`'s groups' offsets, then delete the segments that hold only
    /// records before every partition's `base`.
    pub fn commit(
        &self,
        log: &TopicLog,
        partition: u32,
        committed: &HashMap<String, u64>,
        base: u64,
    ) -> Result<()> {
        let mut state = log.lock();
        state.committed.insert(partition, committed.clone());
        let path = log.dir.join(COMMITTED);
        let tmp = log.dir.join("committed.json.tmp");
        let body = serde_json::to_vec(&state.committed)?;
        let context = format!("write-ahead log: saving {}", path.display());
        let mut file = File::create(&tmp).map_err(io(&context))?;
        file.write_all(&body).map_err(io(&context))?;
        if self.cfg.durability == Durability::Fsync {
            file.sync_data().map_err(io(&context))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&context))?;
        if self.cfg.durability == Durability::Fsync {
            sync_dir(&log.dir)?;
        }
        state.done_below.insert(partition, base);
        self.drop_done(log, &mut state);
        Ok(())
    }

    /// Records of `partition` before `base` were dropped (size retention of a topic
    /// nobody reads).
    pub fn dropped(&self, log: &TopicLog, partition: u32, base: u64) {
        let mut state = log.lock();
        state.done_below.insert(partition, base);
        self.drop_done(log, &mut state);
    }

    /// Delete the oldest segments while every record in them is done (never the one
    /// being written).
    fn drop_done(&self, log: &TopicLog, state: &mut LogState) {
        while state.segments.len() > 1 {
            // A partition the bus no longer has (fewer configured) was checked at
            // start-up to hold nothing unconsumed.
            let done = state.segments[0]
                .newest
                .iter()
                .all(|(p, newest)| state.done_below.get(p).is_none_or(|below| newest < below));
            if !done {
                break;
            }
            let Some(old) = state.segments.pop_front() else {
                break;
            };
            let path = log.segment_path(old.seq);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("write-ahead log: cannot delete {}: {e}", path.display());
            }
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some(s) = &self.syncer {
            s.stop();
        }
    }
}

/// The whole frames of a segment; a torn or damaged tail is cut off the file.
fn read_segment(path: &Path, last: bool) -> Result<Vec<Frame>> {
    let bytes = Bytes::from(
        std::fs::read(path).map_err(io(format!("write-ahead log: reading {}", path.display())))?,
    );
    let (frames, whole) = read_frames(&bytes);
    if whole < bytes.len() {
        tracing::warn!(
            "write-ahead log {}: {} byte(s) after its record {} are not a whole frame ({}); the segment ends there",
            path.display(),
            bytes.len() - whole,
            frames.len(),
            if last { "a write cut short by a crash" } else { "damaged" },
        );
        truncate(path, whole as u64)?;
    }
    Ok(frames)
}

fn read_committed(dir: &Path) -> Result<BTreeMap<u32, HashMap<String, u64>>> {
    let path = dir.join(COMMITTED);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::Invalid(format!(
                "write-ahead log {}: not a map of partition to group offsets: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(io(format!("write-ahead log: reading {}", path.display()))(
            e,
        )),
    }
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let context = format!("write-ahead log: cutting {} back", path.display());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(&context))?;
    file.set_len(len).map_err(io(&context))?;
    file.sync_all().map_err(io(context))
}

/// A new or renamed file's name is durable once its directory is synced.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("write-ahead log: syncing {}", dir.display())))
}

/// The group commit (see the module docs).
struct Syncer {
    queue: Mutex<SyncQueue>,
    wake: Condvar,
    done: watch::Sender<u64>,
    /// Rounds whose sync failed, with why (the last few).
    failed: Mutex<VecDeque<(u64, String)>>,
}

#[derive(Default)]
struct SyncQueue {
    /// The round the next mark joins.
    round: u64,
    files: Vec<Arc<File>>,
    stop: bool,
}

impl Syncer {
    fn start(interval: Duration) -> Arc<Syncer> {
        let syncer = Arc::new(Syncer {
            queue: Mutex::new(SyncQueue {
                round: 1,
                ..SyncQueue::default()
            }),
            wake: Condvar::new(),
            done: watch::channel(0).0,
            failed: Mutex::new(VecDeque::new()),
        });
        let s = syncer.clone();
        let spawned = std::thread::Builder::new()
            .name("sqlvigil-wal-sync".into())
            .spawn(move || s.run(interval));
        if let Err(e) = spawned {
            tracing::error!("write-ahead log: cannot start the sync thread: {e}");
        }
        syncer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark(&self, file: &Arc<File>) -> u64 {
        let mut q = self.lock();
        if !q.files.iter().any(|f| Arc::ptr_eq(f, file)) {
            q.files.push(file.clone());
        }
        let round = q.round;
        drop(q);
        self.wake.notify_one();
        round
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    fn run(&self, interval: Duration) {
        let mut last = Instant::now() - interval;
        loop {
            let mut q = self.lock();
            while q.files.is_empty() && !q.stop {
                q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.files.is_empty() && q.stop {
                return;
            }
            drop(q);
            // Let more publishes join this round, but never wait longer than `interval`.
            std::thread::sleep(interval.saturating_sub(last.elapsed()));
            let mut q = self.lock();
            let round = q.round;
            q.round += 1;
            let files = std::mem::take(&mut q.files);
            drop(q);
            last = Instant::now();
            let errors: Vec<String> = files
                .iter()
                .filter_map(|f| f.sync_data().err().map(|e| e.to_string()))
                .collect();
            if let Some(e) = errors.first() {
                tracing::error!("write-ahead log: fdatasync failed: {e}");
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.push_back((round, e.clone()));
                if failed.len() > 64 {
                    failed.pop_front();
                }
            }
            self.done.send_replace(round);
        }
    }

    async fn wait(&self, ticket: u64) -> Result<()> {
        let mut rx = self.done.subscribe();
        if rx.wait_for(|&done| done >= ticket).await.is_err() {
            return Err(Error::Unavailable(
                "write-ahead log: the sync thread stopped".into(),
            ));
        }
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match failed.iter().find(|(round, _)| *round == ticket) {
            Some((_, e)) => Err(Error::Unavailable(format!(
                "write-ahead log: fdatasync failed ({e}); retry later"
            ))),
            None => Ok(()),
        }
    }
}
