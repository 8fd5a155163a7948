//! A component's own series (the Alertmanager pusher's posts, the OTLP exporter's drops, the
//! fleet election, the watched database's identity): each component owns one [`Series`] and is
//! its only writer; the outputs read it beside the snapshot. The version grows with every
//! write, so renderers can cache by it.

use std::sync::{Arc, Mutex};

use super::Sample;

/// One component's current samples, with a version bumped on every write; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Series(Arc<Mutex<(u64, Arc<Vec<Sample>>)>>);

impl Series {
    /// Replaces the samples.
    pub(crate) fn set(&self, samples: Vec<Sample>) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        g.1 = Arc::new(samples);
    }

    /// The version and the samples (an `Arc` clone; no lock is held after return).
    pub(crate) fn get(&self) -> (u64, Arc<Vec<Sample>>) {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (g.0, g.1.clone())
    }
}
