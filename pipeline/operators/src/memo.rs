//! A one-entry memo for per-metric-name lookups.

/// A one-entry memo of a per-metric-name computation: points of one metric come
/// together (OTLP groups them), so this avoids re-deriving names and units per point.
#[derive(Debug, Default)]
pub(crate) struct Memo<T> {
    input: String,
    output: Option<T>,
}

impl<T: Clone> Memo<T> {
    pub(crate) fn get(&mut self, input: &str, f: impl FnOnce(&str) -> T) -> T {
        match &self.output {
            Some(out) if self.input == input => out.clone(),
            _ => {
                let out = f(input);
                self.input.clear();
                self.input.push_str(input);
                self.output = Some(out.clone());
                out
            }
        }
    }
}
