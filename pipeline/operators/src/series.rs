//! Dense per-series state: a registry that interns series ids into `u32` slots, so
//! operators keep their per-series scalars in plain `Vec`s indexed by slot
//! (struct-of-arrays) instead of one hash map entry per (rule, series).
//!
//! The public identity of a series stays [`SeriesKey::id`] (stable FNV-1a); slots are a
//! process-local detail and never leave the operator (checkpoints name series by id).
//! Released slots are reused, so the columns grow with the peak number of *active*
//! series, not with every series ever seen.

use sqlvigil_model::SeriesKey;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for keys that are already well-mixed 64-bit hashes (series ids) or short
/// strings (metric names): a folded 128-bit multiply instead of SipHash, whose
/// DoS resistance buys nothing for ids computed by us from already-hashed data.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Metric names (a few dozen distinct values); FNV-1a per byte is plenty.
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn write_u64(&mut self, n: u64) {
        let m = u128::from(self.0 ^ n) * u128::from(MIX);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and a tag from the top 7: mix both.
        let m = u128::from(self.0) * u128::from(MIX);
        (m as u64) ^ ((m >> 64) as u64)
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuild = BuildHasherDefault<FastHasher>;
/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, FastBuild>;

/// Interns series ids into dense slots; released slots are reused first.
///
/// Memory: 8 B (id) + 1 B (live flag) per slot, plus the index — a hashbrown table of
/// `(u64, u32)` entries (16 B + 1 control byte per bucket at a load between 7/16 and
/// 7/8, so 19–39 B per series): 28–48 B per series in all.
#[derive(Debug, Default)]
pub struct SeriesRegistry {
    index: FastMap<u64, u32>,
    ids: Vec<u64>,
    live: Vec<bool>,
    free: Vec<u32>,
}

/// Result of [`SeriesRegistry::intern`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interned {
    /// The series already had this slot.
    Known(u32),
    /// A slot was (re)assigned to the series: its columns must be reset by the caller.
    New(u32),
}

impl Interned {
    pub fn slot(self) -> u32 {
        match self {
            Interned::Known(s) | Interned::New(s) => s,
        }
    }
}

impl SeriesRegistry {
    /// The slot of `id`, if it has one.
    pub fn get(&self, id: u64) -> Option<u32> {
        self.index.get(&id).copied()
    }

    /// The slot of `id`, assigning one (a released slot first) when it has none.
    pub fn intern(&mut self, id: u64) -> Interned {
        if let Some(&slot) = self.index.get(&id) {
            return Interned::Known(slot);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.ids[slot as usize] = id;
                self.live[slot as usize] = true;
                slot
            }
            None => {
                self.ids.push(id);
                self.live.push(true);
                (self.ids.len() - 1) as u32
            }
        };
        self.index.insert(id, slot);
        Interned::New(slot)
    }

    /// Gives `slot` back; the caller has already cleared its columns.
    pub fn release(&mut self, slot: u32) {
        let i = slot as usize;
        if self.live.get(i).copied().unwrap_or(false) {
            self.index.remove(&self.ids[i]);
            self.live[i] = false;
            self.free.push(slot);
        }
    }

    /// Number of slots ever assigned (live or free): the length columns must have.
    pub fn slots(&self) -> usize {
        self.ids.len()
    }

    /// Series currently holding a slot.
    pub fn live_count(&self) -> usize {
        self.index.len()
    }

    pub fn is_live(&self, slot: u32) -> bool {
        self.live.get(slot as usize).copied().unwrap_or(false)
    }

    /// Series id of a live slot.
    pub fn id(&self, slot: u32) -> u64 {
        self.ids[slot as usize]
    }

    /// Live slots in slot order.
    pub fn live_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.live
            .iter()
            .enumerate()
            .filter(|(_, l)| **l)
            .map(|(i, _)| i as u32)
    }
}

/// A [`SeriesKey`] packed into one heap buffer (length-prefixed fields), for the rules
/// that must name a series without a point in hand (absence). A `SeriesKey` costs five
/// `String`s and a `BTreeMap` node (~700 B with one attribute); this costs its text plus
/// 4 B per field and 16 B inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactKey(Box<[u8]>);

impl CompactKey {
    pub fn new(key: &SeriesKey) -> Self {
        let mut parts: Vec<&str> = vec![&key.instance, &key.host, &key.database, &key.metric];
        for (k, v) in &key.attributes {
            parts.push(k);
            parts.push(v);
        }
        let len = parts.iter().map(|p| 4 + p.len()).sum();
        let mut buf = Vec::with_capacity(len);
        for p in parts {
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(p.as_bytes());
        }
        CompactKey(buf.into_boxed_slice())
    }

    fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest: &[u8] = &self.0;
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let n = (u32::from_le_bytes(*len) as usize).min(tail.len());
            out.push(String::from_utf8_lossy(&tail[..n]).into_owned());
            rest = &tail[n..];
        }
        out
    }

    /// The key back (its fields were valid UTF-8 when packed).
    pub fn key(&self) -> SeriesKey {
        let mut fields = self.fields();
        let attrs = if fields.len() > 4 {
            fields.split_off(4)
        } else {
            Vec::new()
        };
        fields.resize(4, String::new());
        let mut f = fields.into_iter();
        let mut next = || f.next().unwrap_or_default();
        let (instance, host, database, metric) = (next(), next(), next(), next());
        let mut attrs = attrs.into_iter();
        let mut attributes = BTreeMap::new();
        while let (Some(k), Some(v)) = (attrs.next(), attrs.next()) {
            attributes.insert(k, v);
        }
        SeriesKey::from_parts(instance, host, database, metric, attributes)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_reuses_released_slots() {
        let mut r = SeriesRegistry::default();
        assert_eq!(r.intern(10), Interned::New(0));
        assert_eq!(r.intern(20), Interned::New(1));
        assert_eq!(r.intern(10), Interned::Known(0));
        r.release(0);
        assert_eq!(r.get(10), None);
        assert_eq!(r.intern(30), Interned::New(0), "the freed slot is reused");
        assert_eq!((r.slots(), r.live_count()), (2, 2));
        assert_eq!(r.id(0), 30);
        assert_eq!(r.live_slots().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn compact_key_round_trips() {
        let k = SeriesKey::new("sql-1", "h", "", "sqlserver.cpu.utilization")
            .with_attr("cpu", "3")
            .with_attr("", "empty key")
            .with_attr("z", "");
        assert_eq!(CompactKey::new(&k).key(), k);
        let plain = SeriesKey::new("i", "", "db", "m");
        assert_eq!(CompactKey::new(&plain).key(), plain);
    }
}
