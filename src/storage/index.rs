//! What the store's indexes hold: a task's place in the ready order ([`ReadyPos`]) and the
//! entry the ready and delayed indexes keep per task ([`Entry`]), enough to choose a task
//! without reading its record. Every backend stores these; how is its own business.

/// A position in the ready index, in dispatch order: lower priority number first, then
/// `order` (the time the task became ready), then `seq` (unique, breaks ties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadyPos {
    /// 1–5.
    pub priority: u8,
    /// Order within the priority.
    pub order: u64,
    /// Unique tie-breaker.
    pub seq: u64,
}

/// Routing of a task to one worker, as the indexes hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRoute {
    /// Only a poller with this identity gets the task…
    pub identity: String,
    /// …until this instant (ms); `None` = never fall back.
    pub fallback_at: Option<u64>,
}

/// What the ready and delayed indexes hold per task: enough to choose a task without reading
/// its record (type for type-aware dispatch, route for routing) and to find the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Priority (needed when a delayed entry moves to the ready index).
    pub priority: u8,
    /// Task type (a boxed `str`, as the id: 8 bytes narrower than a `String`, see `route`).
    pub task_type: Box<str>,
    /// Task id.
    pub task_id: Box<str>,
    /// When the task became ready, for the backlog age.
    pub ready_at: u64,
    /// Routing to one worker, if any. Boxed: few tasks are routed, and every queue with a task
    /// in memory holds entries in its backlog window (a B-tree node of 11 of them at least),
    /// which an inline route would make 40 bytes wider each.
    pub route: Option<Box<EntryRoute>>,
}
