//! A small memo for per-metric-name lookups: points of one metric mostly come together
//! (OTLP groups them by metric), but a batch may interleave a few metrics, so it keeps
//! the last [`SLOTS`] names rather than one.

/// Names remembered; a miss replaces them round-robin.
const SLOTS: usize = 8;

#[derive(Debug)]
pub(crate) struct Memo<T> {
    entries: Vec<(String, T)>,
    next: usize,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            entries: Vec::with_capacity(SLOTS),
            next: 0,
        }
    }
}

impl<T: Clone> Memo<T> {
    pub(crate) fn get(&mut self, input: &str, f: impl FnOnce(&str) -> T) -> T {
        if let Some((_, out)) = self.entries.iter().find(|(k, _)| k == input) {
            return out.clone();
        }
        let out = f(input);
        if self.entries.len() < SLOTS {
            self.entries.push((input.to_string(), out.clone()));
        } else {
            let slot = &mut self.entries[self.next];
            slot.0.clear();
            slot.0.push_str(input);
            slot.1 = out.clone();
            self.next = (self.next + 1) % SLOTS;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_interleaved_names() {
        let mut calls = 0;
        let mut memo = Memo::default();
        for _ in 0..3 {
            for name in ["a", "bb", "a", "ccc"] {
                let n = memo.get(name, |m| {
                    calls += 1;
                    m.len()
                });
                assert_eq!(n, name.len());
            }
        }
        assert_eq!(calls, 3, "each name computed once");
    }
}
