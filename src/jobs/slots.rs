//! A handler's bounded queue: at most so many jobs taken and not yet answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Places for at most `max` jobs at once; shared with the jobs' threads.
#[derive(Debug, Clone)]
pub struct Slots {
    taken: Arc<AtomicUsize>,
    max: usize,
}

/// One taken place; free again when dropped (with its answer, or with a job that died).
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots { taken: Arc::default(), max }
    }

    /// A place, or `None` when all `max` are taken: answer busy.
    pub fn take(&self) -> Option<Slot> {
        let max = self.max;
        self.taken.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(Arc::clone(&self.taken)))
    }

    /// How many are taken now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
