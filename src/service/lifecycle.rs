//! Whether the service takes requests.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the server takes requests.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    stopping: AtomicBool,
}

impl Lifecycle {
    /// Storage is open and recovered.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Shutting down: new requests get 503.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// True once shutting down began.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// True while requests are served.
    pub fn serving(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst)
    }
}
