//! What the store's indexes hold: a task's place in the ready order ([`ReadyPos`]) and the
//! entry the ready and delayed indexes keep per task ([`Entry`]), enough to choose a task
//! without reading its record, and the bytes an entry is stored as by every backend.

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
    /// A serial task's fairness key (`""` without one): no two tasks of the same serial key
    /// are leased at once.
    pub serial_key: Option<Box<str>>,
}

/// The priority byte's flag that a serial key follows the id (priorities are 1–5, so entries
/// written before serial tasks never have it).
const SERIAL: u8 = 0x80;

impl Entry {
    /// `priority | ready_at | type len | type | id len | id | [key len | key] |
    /// [fallback_at | identity]`, the key there when the priority byte has its top bit set.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(11 + self.task_type.len() + self.task_id.len());
        v.push(self.priority | if self.serial_key.is_some() { SERIAL } else { 0 });
        v.extend_from_slice(&self.ready_at.to_be_bytes());
        // Names are at most 200 bytes of ASCII, so one length byte is enough.
        v.push(self.task_type.len() as u8);
        v.extend_from_slice(self.task_type.as_bytes());
        v.push(self.task_id.len() as u8);
        v.extend_from_slice(self.task_id.as_bytes());
        if let Some(k) = &self.serial_key {
            v.push(k.len() as u8);
            v.extend_from_slice(k.as_bytes());
        }
        if let Some(r) = &self.route {
            v.extend_from_slice(&r.fallback_at.unwrap_or(u64::MAX).to_be_bytes());
            v.extend_from_slice(r.identity.as_bytes());
        }
        v
    }

    /// The inverse of [`Entry::encode`].
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let first = *raw.first()?;
        let priority = first & !SERIAL;
        let ready_at = u64::from_be_bytes(raw.get(1..9)?.try_into().ok()?);
        let type_len = *raw.get(9)? as usize;
        let task_type = std::str::from_utf8(raw.get(10..10 + type_len)?)
            .ok()?
            .into();
        let id_at = 10 + type_len;
        let id_len = *raw.get(id_at)? as usize;
        let task_id = std::str::from_utf8(raw.get(id_at + 1..id_at + 1 + id_len)?)
            .ok()?
            .into();
        let mut rest = &raw[id_at + 1 + id_len..];
        let serial_key = if first & SERIAL != 0 {
            let n = *rest.first()? as usize;
            let key = std::str::from_utf8(rest.get(1..1 + n)?).ok()?.into();
            rest = &rest[1 + n..];
            Some(key)
        } else {
            None
        };
        let route = if rest.is_empty() {
            None
        } else {
            let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            Some(Box::new(EntryRoute {
                identity: std::str::from_utf8(&rest[8..]).ok()?.to_string(),
                fallback_at: (at != u64::MAX).then_some(at),
            }))
        };
        Some(Entry {
            priority,
            task_type,
            task_id,
            ready_at,
            route,
            serial_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let mut e = Entry {
            priority: 2,
            task_type: "send-email".into(),
            task_id: "x".into(),
            ready_at: 7,
            route: None,
            serial_key: None,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        e.serial_key = Some("group-1".into());
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        for fallback_at in [None, Some(99)] {
            e.route = Some(Box::new(EntryRoute {
                identity: "host-3@4711 é".into(),
                fallback_at,
            }));
            assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
            e.serial_key = None;
            assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
            e.serial_key = Some("".into());
        }
        assert_eq!(Entry::decode(&[1, 2]), None);
    }
}
