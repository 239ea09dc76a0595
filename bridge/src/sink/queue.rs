//! A bounded on-disk queue of `_bulk` items between the pipeline and Elasticsearch.
//!
//! Items (an action line and a source line) are appended to segment files named by
//! their first byte's position in the queue; a cursor file records how far Elasticsearch
//! has acknowledged. [`DiskQueue::append`] returns once the items are on disk, so the
//! pipeline may acknowledge its bus records then; the shipper reads batches from the
//! read position and acknowledges them in order. Across a restart, everything after the
//! cursor is sent again (idempotent ids make that harmless), and a torn last item from a
//! crash is cut off. When `max_bytes` wait unacknowledged, `append` blocks: the stall
//! travels back through the bus to the receiver, which answers with retryable errors.

use crate::{BridgeError, Result};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

const CURSOR: &str = "cursor";
const SUFFIX: &str = ".ndjson";

/// A batch of whole items read from the queue: bytes `[start, end)`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub start: u64,
    pub end: u64,
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    base: u64,
    len: u64,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    writer: Option<File>,
    /// Next byte to hand to the shipper.
    read: u64,
    /// Everything before this is in Elasticsearch.
    acked: u64,
    closing: bool,
}

impl State {
    fn end(&self) -> u64 {
        self.segments.back().map_or(self.acked, |s| s.base + s.len)
    }
}

pub struct DiskQueue {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    space: Condvar,
}

fn io_err(what: &str, path: &Path, source: std::io::Error) -> BridgeError {
    BridgeError::Queue {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

impl DiskQueue {
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Result<DiskQueue> {
        fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let mut bases: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| io_err("list", dir, e))?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(SUFFIX)?
                    .parse()
                    .ok()
            })
            .collect();
        bases.sort_unstable();
        let acked = fs::read_to_string(dir.join(CURSOR))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0u64);
        let mut segments = VecDeque::new();
        for (i, base) in bases.iter().enumerate() {
            let path = segment_path(dir, *base);
            let last = i + 1 == bases.len();
            let len = if last {
                repair_tail(&path)?
            } else {
                fs::metadata(&path)
                    .map_err(|e| io_err("stat", &path, e))?
                    .len()
            };
            segments.push_back(Segment { base: *base, len });
        }
        let start = segments.front().map_or(acked, |s| s.base);
        let acked = acked.max(start);
        let state = State {
            segments,
            writer: None,
            read: acked,
            acked,
            closing: false,
        };
        Ok(DiskQueue {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            state: Mutex::new(state),
            space: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes written and not yet acknowledged by Elasticsearch.
    pub fn pending_bytes(&self) -> u64 {
        let s = self.lock();
        s.end() - s.acked
    }

    /// Whether the shipper has everything on disk in hand or acknowledged.
    pub fn is_drained(&self) -> bool {
        let s = self.lock();
        s.end() == s.acked
    }

    /// Stop blocking writers (shutdown): they write past the bound instead.
    pub fn close(&self) {
        self.lock().closing = true;
        self.space.notify_all();
    }

    /// Append whole items and make them durable; waits while the queue is full.
    pub fn append(&self, items: &[u8]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut s = self.lock();
        while !s.closing && s.end() - s.acked >= self.max_bytes {
            s = self
                .space
                .wait_timeout(s, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        self.write_locked(&mut s, items)
    }

    /// Append without waiting for room (small control documents: anomalies, insights).
    pub fn append_now(&self, items: &[u8]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut s = self.lock();
        self.write_locked(&mut s, items)
    }

    fn write_locked(&self, s: &mut State, items: &[u8]) -> Result<()> {
        let rotate = s
            .segments
            .back()
            .is_none_or(|seg| seg.len >= self.segment_bytes);
        if rotate || s.writer.is_none() {
            let base = s.end();
            if rotate {
                s.segments.push_back(Segment { base, len: 0 });
            }
            let seg_base = s.segments.back().map_or(base, |seg| seg.base);
            let path = segment_path(&self.dir, seg_base);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_err("open", &path, e))?;
            s.writer = Some(file);
        }
        let path = self.dir.clone();
        let Some(w) = s.writer.as_mut() else {
            return Err(BridgeError::Invariant(
                "the elastic queue has no open segment to write".into(),
            ));
        };
        w.write_all(items)
            .and_then(|_| w.sync_data())
            .map_err(|e| io_err("write", &path, e))?;
        if let Some(seg) = s.segments.back_mut() {
            seg.len += items.len() as u64;
        }
        Ok(())
    }

    /// The next batch of at most `max_bytes` (or one item, if bigger) and `max_docs` items.
    pub fn read_batch(&self, max_bytes: usize, max_docs: usize) -> Result<Option<Batch>> {
        let mut s = self.lock();
        let Some(seg) = s.segments.iter().find(|g| g.base + g.len > s.read) else {
            return Ok(None);
        };
        let (base, seg_end) = (seg.base, seg.base + seg.len);
        let start = s.read.max(base);
        let path = segment_path(&self.dir, base);
        let mut file = File::open(&path).map_err(|e| io_err("open", &path, e))?;
        file.seek(SeekFrom::Start(start - base))
            .map_err(|e| io_err("seek", &path, e))?;
        let mut data = Vec::new();
        let mut want = (max_bytes as u64).min(seg_end - start);
        loop {
            let before = data.len();
            (&mut file)
                .take(want - before as u64)
                .read_to_end(&mut data)
                .map_err(|e| io_err("read", &path, e))?;
            let cut = item_boundary(&data, max_docs);
            if cut > 0 || start + data.len() as u64 >= seg_end {
                data.truncate(cut);
                break;
            }
            // One item larger than max_bytes: read on until it is whole.
            want = (want * 2).min(seg_end - start);
        }
        if data.is_empty() {
            return Ok(None);
        }
        let end = start + data.len() as u64;
        s.read = end;
        Ok(Some(Batch { start, end, data }))
    }

    /// Everything before `upto` is in Elasticsearch: persist the cursor, drop old segments.
    pub fn ack(&self, upto: u64) -> Result<()> {
        let mut s = self.lock();
        if upto <= s.acked {
            return Ok(());
        }
        s.acked = upto;
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, upto.to_string())
            .and_then(|_| fs::rename(&tmp, self.dir.join(CURSOR)))
            .map_err(|e| io_err("write cursor", &tmp, e))?;
        while s.segments.len() > 1 && s.segments.get(1).is_some_and(|n| n.base <= upto) {
            if let Some(old) = s.segments.pop_front() {
                let _ = fs::remove_file(segment_path(&self.dir, old.base));
            }
        }
        drop(s);
        self.space.notify_all();
        Ok(())
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SUFFIX}"))
}

/// End offsets (exclusive) of the whole items (two lines each) in `data`.
pub fn item_ends(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    data.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .skip(1)
        .step_by(2)
}

/// Byte length of the longest prefix of `data` made of whole items, at most `max_docs`.
fn item_boundary(data: &[u8], max_docs: usize) -> usize {
    item_ends(data).take(max_docs).last().unwrap_or(0)
}

/// Cut a torn last item (a crash mid-write) off the newest segment; returns its length.
fn repair_tail(path: &Path) -> Result<u64> {
    let data = fs::read(path).map_err(|e| io_err("read", path, e))?;
    let cut = item_boundary(&data, usize::MAX);
    if cut < data.len() {
        tracing::warn!(
            path = %path.display(),
            dropped_bytes = data.len() - cut,
            "cutting a torn item off the elastic queue (it was never acknowledged upstream)"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err("open", path, e))?;
        f.set_len(cut as u64)
            .map_err(|e| io_err("truncate", path, e))?;
    }
    Ok(cut as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Vec<u8> {
        format!("{{\"create\":{{}}}}\n{{\"n\":{n}}}\n").into_bytes()
    }

    #[test]
    fn batches_respect_item_boundaries_and_acks_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::open(dir.path(), 1 << 20, 64).unwrap();
        for n in 0..10 {
            q.append(&item(n)).unwrap();
        }
        let b = q.read_batch(1 << 20, 3).unwrap().unwrap();
        assert_eq!(b.data.iter().filter(|c| **c == b'\n').count(), 6);
        q.ack(b.end).unwrap();
        let second = q.read_batch(1 << 20, 3).unwrap().unwrap();
        drop(q);
        // Not acknowledged: read again after a restart.
        let q = DiskQueue::open(dir.path(), 1 << 20, 64).unwrap();
        let again = q.read_batch(1 << 20, 3).unwrap().unwrap();
        assert_eq!(again.start, second.start);
        assert_eq!(again.data, second.data);
        let mut total = 3;
        let mut b = Some(again);
        while let Some(batch) = b {
            total += batch.data.iter().filter(|c| **c == b'\n').count() / 2;
            q.ack(batch.end).unwrap();
            b = q.read_batch(1 << 20, 3).unwrap();
        }
        assert_eq!(total, 10);
        assert!(q.is_drained());
        // Fully acknowledged segments are deleted, the current one stays.
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert!(files <= 3, "{files} files left");
    }

    #[test]
    fn a_torn_item_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        q.append(&item(1)).unwrap();
        q.append_now(b"{\"create\":{}}\n{\"n\":").unwrap();
        drop(q);
        let q = DiskQueue::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        let b = q.read_batch(1 << 20, 100).unwrap().unwrap();
        assert_eq!(b.data, item(1));
        assert!(q.read_batch(1 << 20, 100).unwrap().is_none());
        q.append(&item(2)).unwrap();
        assert_eq!(q.read_batch(1 << 20, 100).unwrap().unwrap().data, item(2));
    }

    #[test]
    fn append_waits_for_room_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let q = std::sync::Arc::new(DiskQueue::open(dir.path(), 40, 40).unwrap());
        q.append(&item(1)).unwrap();
        q.append(&item(2)).unwrap(); // now over the bound
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.append(&item(3)));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!t.is_finished(), "append must wait while the queue is full");
        let b = q.read_batch(1 << 20, 100).unwrap().unwrap();
        q.ack(b.end).unwrap();
        t.join().unwrap().unwrap();
    }
}
