//! The stored form of a [`TaskRecord`]: a compact binary encoding, written by hand.
//!
//! A record is written on every add, lease and settle and read back on every lease and settle,
//! so its encoding sits on the queue actor's hot path: as JSON it cost about a seventh of the
//! actor's time (field names matched as strings, every number printed and parsed). This
//! encoding is a version byte, then each field in declaration order: integers as LEB128
//! varints, `f64` as 8 little-endian bytes, strings and JSON values as a varint length and
//! their bytes, an `Option` as a 0/1 tag then the value, enums as one byte. JSON documents
//! (payload, result, heartbeat details) are stored as the text the client sent. A large
//! payload is kept apart, under a key of its own written once at add (version 2: a tag byte
//! says whether the payload follows or is apart), so leases and settles rewrite a few hundred
//! bytes however large the payload: on a nearly full disk they fit in the reserve.
//!
//! Records written before this encoding are JSON objects: [`decode`] reads both (a JSON record
//! starts with `{`, never with the version byte), so a store keeps working across the upgrade
//! and each record moves to the new form the next time it is written.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::model::{
    ActiveLease, Queued, RetryPolicy, RouteTo, SettleKind, Settled, TaskError, TaskRecord,
    TaskState,
};

/// The first byte of a record in this encoding: 2 since payloads can be kept apart.
const VERSION: u8 = 2;

/// The first byte of records written before payloads could be kept apart (read, not written).
const VERSION_INLINE: u8 = 1;

/// Encodes `rec` in the stored form.
pub fn encode(rec: &TaskRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(128 + rec.payload.get().len()));
    w.0.push(VERSION);
    w.str(&rec.task_id);
    w.str(&rec.task_type);
    if rec.payload_apart {
        w.0.push(1);
    } else {
        w.0.push(0);
        w.str(rec.payload.get());
    }
    w.uint(rec.headers.len() as u64);
    for (k, v) in &rec.headers {
        w.str(k);
        w.str(v);
    }
    w.uint(u64::from(rec.priority));
    w.opt(rec.fairness_key.as_deref(), Writer::str);
    w.0.extend_from_slice(&rec.fairness_weight.to_le_bytes());
    w.opt(rec.schedule_to_start_timeout_ms, Writer::uint);
    w.uint(rec.start_to_close_timeout_ms);
    w.opt(rec.heartbeat_timeout_ms, Writer::uint);
    let retry = &rec.retry;
    w.uint(u64::from(retry.max_attempts));
    w.uint(retry.initial_interval_ms);
    w.0.extend_from_slice(&retry.backoff_coefficient.to_le_bytes());
    w.uint(retry.maximum_interval_ms);
    w.opt(rec.route_to.as_ref(), |w, r| {
        w.str(&r.identity);
        w.opt(r.fallback_after_ms, Writer::uint);
    });
    w.0.push(state_tag(rec.state));
    w.uint(u64::from(rec.attempt));
    w.uint(rec.seq);
    w.uint(rec.added_at);
    w.uint(rec.updated_at);
    w.opt(rec.queued, |w, q| match q {
        Queued::Ready { order } => {
            w.0.push(0);
            w.uint(order);
        }
        Queued::Delayed { due } => {
            w.0.push(1);
            w.uint(due);
        }
    });
    w.opt(rec.lease.as_ref(), |w, l| {
        w.uint(l.id);
        w.str(&l.identity);
        w.uint(l.dispatched_at);
        w.uint(l.close_deadline);
        w.opt(l.heartbeat_deadline, Writer::uint);
        w.uint(l.order);
        w.uint(l.ready_at);
    });
    w.opt(rec.settled.as_ref(), |w, s| {
        w.uint(s.lease_id);
        w.0.push(match s.kind {
            SettleKind::Complete => 0,
            SettleKind::Fail => 1,
        });
        w.0.push(state_tag(s.state));
        w.opt(s.next_attempt_at, Writer::uint);
    });
    w.opt(rec.result.as_deref().map(RawValue::get), Writer::str);
    w.opt(rec.last_error.as_ref(), |w, e| {
        w.str(&e.message);
        w.opt(e.kind.as_deref(), Writer::str);
    });
    w.opt(
        rec.heartbeat_details.as_deref().map(RawValue::get),
        Writer::str,
    );
    // Flags: bit 0 cancel requested, bit 1 serial (records before serial tasks hold 0 or 1).
    w.0.push(u8::from(rec.cancel_requested) | (u8::from(rec.serial) << 1));
    w.0
}

/// Decodes a stored record, in this encoding or as the JSON of earlier versions.
pub fn decode(raw: &[u8]) -> Result<TaskRecord, String> {
    match raw.first() {
        Some(&v) if v == VERSION || v == VERSION_INLINE => {
            let mut r = Reader(&raw[1..]);
            let rec = r.record(v)?;
            if !r.0.is_empty() {
                return Err(format!("{} bytes after the record", r.0.len()));
            }
            Ok(rec)
        }
        Some(b'{') => serde_json::from_slice(raw).map_err(|e| e.to_string()),
        Some(b) => Err(format!("unknown record encoding {b:#04x}")),
        None => Err("empty record".into()),
    }
}

fn state_tag(s: TaskState) -> u8 {
    match s {
        TaskState::Pending => 0,
        TaskState::Running => 1,
        TaskState::Completed => 2,
        TaskState::Failed => 3,
        TaskState::TimedOut => 4,
        TaskState::Cancelled => 5,
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn str(&mut self, s: &str) {
        self.uint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                write(self, v);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

type Read<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Read<u8> {
        let (&b, rest) = self.0.split_first().ok_or("record cut short")?;
        self.0 = rest;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Read<&'a [u8]> {
        if self.0.len() < n {
            return Err("record cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn uint(&mut self) -> Read<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn small<T: TryFrom<u64>>(&mut self) -> Read<T> {
        let v = self.uint()?;
        T::try_from(v).map_err(|_| format!("number {v} out of range"))
    }

    fn f64(&mut self) -> Read<f64> {
        let raw = self.bytes(8)?;
        Ok(f64::from_le_bytes(raw.try_into().map_err(|_| "bad f64")?))
    }

    fn str(&mut self) -> Read<String> {
        let n = self.small::<usize>()?;
        let raw = self.bytes(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    fn json(&mut self) -> Read<Box<RawValue>> {
        RawValue::from_string(self.str()?).map_err(|e| format!("stored JSON: {e}"))
    }

    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Read<T>) -> Read<Option<T>> {
        match self.byte()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            t => Err(format!("bad option tag {t}")),
        }
    }

    fn state(&mut self) -> Read<TaskState> {
        Ok(match self.byte()? {
            0 => TaskState::Pending,
            1 => TaskState::Running,
            2 => TaskState::Completed,
            3 => TaskState::Failed,
            4 => TaskState::TimedOut,
            5 => TaskState::Cancelled,
            t => return Err(format!("bad state tag {t}")),
        })
    }

    /// A record of encoding `version`. A payload kept apart reads as `null` here; the store
    /// fills it in from its own key.
    fn record(&mut self, version: u8) -> Read<TaskRecord> {
        let task_id = self.str()?;
        let task_type = self.str()?;
        let payload_apart = match version {
            VERSION_INLINE => false,
            _ => match self.byte()? {
                0 => false,
                1 => true,
                t => return Err(format!("bad payload tag {t}")),
            },
        };
        let payload = if payload_apart {
            crate::model::null_json()
        } else {
            self.json()?
        };
        let flags;
        Ok(TaskRecord {
            task_id,
            task_type,
            payload,
            payload_apart,
            headers: {
                let n = self.uint()?;
                let mut headers = BTreeMap::new();
                for _ in 0..n {
                    headers.insert(self.str()?, self.str()?);
                }
                headers
            },
            priority: self.small()?,
            fairness_key: self.opt(Self::str)?,
            fairness_weight: self.f64()?,
            schedule_to_start_timeout_ms: self.opt(Self::uint)?,
            start_to_close_timeout_ms: self.uint()?,
            heartbeat_timeout_ms: self.opt(Self::uint)?,
            retry: RetryPolicy {
                max_attempts: self.small()?,
                initial_interval_ms: self.uint()?,
                backoff_coefficient: self.f64()?,
                maximum_interval_ms: self.uint()?,
            },
            route_to: self.opt(|r| {
                Ok(RouteTo {
                    identity: r.str()?,
                    fallback_after_ms: r.opt(Self::uint)?,
                })
            })?,
            state: self.state()?,
            attempt: self.small()?,
            seq: self.uint()?,
            added_at: self.uint()?,
            updated_at: self.uint()?,
            queued: self.opt(|r| match r.byte()? {
                0 => Ok(Queued::Ready { order: r.uint()? }),
                1 => Ok(Queued::Delayed { due: r.uint()? }),
                t => Err(format!("bad queue position tag {t}")),
            })?,
            lease: self.opt(|r| {
                Ok(ActiveLease {
                    id: r.uint()?,
                    identity: r.str()?,
                    dispatched_at: r.uint()?,
                    close_deadline: r.uint()?,
                    heartbeat_deadline: r.opt(Self::uint)?,
                    order: r.uint()?,
                    ready_at: r.uint()?,
                })
            })?,
            settled: self.opt(|r| {
                Ok(Settled {
                    lease_id: r.uint()?,
                    kind: match r.byte()? {
                        0 => SettleKind::Complete,
                        1 => SettleKind::Fail,
                        t => return Err(format!("bad settle kind tag {t}")),
                    },
                    state: r.state()?,
                    next_attempt_at: r.opt(Self::uint)?,
                })
            })?,
            result: self.opt(Self::json)?,
            last_error: self.opt(|r| {
                Ok(TaskError {
                    message: r.str()?,
                    kind: r.opt(Self::str)?,
                })
            })?,
            heartbeat_details: self.opt(Self::json)?,
            // Fields are read in the order they are written: the flags byte comes last.
            cancel_requested: {
                flags = self.byte()?;
                if flags > 3 {
                    return Err(format!("bad flags {flags}"));
                }
                flags & 1 != 0
            },
            serial: flags & 2 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskSpec;

    fn json(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).unwrap()
    }

    fn plain() -> TaskRecord {
        let req: TaskSpec = serde_json::from_str(
            r#"{"task_type": "email", "task_id": "order-17", "payload": {"to": "a@b", "n": [1, 2.5]}}"#,
        )
        .unwrap();
        TaskRecord::new(&req.validate().unwrap(), 1_700_000_000_000, 42)
    }

    /// Every optional field set, every number large.
    fn full() -> TaskRecord {
        let mut rec = plain();
        rec.headers.insert("trace".into(), "abc".into());
        rec.headers.insert("é".into(), "ünïcode \"quoted\"".into());
        rec.priority = 5;
        rec.fairness_key = Some("tenant-1".into());
        rec.fairness_weight = 2.75;
        rec.schedule_to_start_timeout_ms = Some(u64::MAX);
        rec.heartbeat_timeout_ms = Some(30_000);
        rec.retry.max_attempts = u32::MAX;
        rec.retry.backoff_coefficient = 1.5;
        rec.route_to = Some(RouteTo {
            identity: "host-1:42".into(),
            fallback_after_ms: Some(5_000),
        });
        rec.state = TaskState::Running;
        rec.attempt = 3;
        rec.queued = Some(Queued::Delayed { due: 99 });
        rec.lease = Some(ActiveLease {
            id: u64::MAX,
            identity: "w".into(),
            dispatched_at: 1,
            close_deadline: 2,
            heartbeat_deadline: Some(3),
            order: 4,
            ready_at: 5,
        });
        rec.settled = Some(Settled {
            lease_id: 7,
            kind: SettleKind::Fail,
            state: TaskState::Pending,
            next_attempt_at: Some(8),
        });
        rec.result = Some(json(r#"{"ok": true}"#));
        rec.last_error = Some(TaskError {
            message: "boom".into(),
            kind: Some("Timeout".into()),
        });
        rec.heartbeat_details = Some(json("[1,2,3]"));
        rec.cancel_requested = true;
        rec.serial = true;
        rec
    }

    /// Records compared through their JSON form (`TaskRecord` holds raw JSON, not `PartialEq`).
    fn same(a: &TaskRecord, b: &TaskRecord) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
        assert_eq!(a.payload.get(), b.payload.get());
    }

    #[test]
    fn records_round_trip() {
        for rec in [plain(), full()] {
            let raw = encode(&rec);
            assert_eq!(raw[0], VERSION);
            same(&decode(&raw).unwrap(), &rec);
        }
    }

    #[test]
    fn every_state_round_trips() {
        for state in [
            TaskState::Pending,
            TaskState::Running,
            TaskState::Completed,
            TaskState::Failed,
            TaskState::TimedOut,
            TaskState::Cancelled,
        ] {
            let mut rec = plain();
            rec.state = state;
            assert_eq!(decode(&encode(&rec)).unwrap().state, state);
        }
    }

    #[test]
    fn records_stored_as_json_still_read() {
        for rec in [plain(), full()] {
            let raw = serde_json::to_vec(&rec).unwrap();
            same(&decode(&raw).unwrap(), &rec);
        }
    }

    #[test]
    fn the_binary_form_is_smaller_than_json() {
        let rec = plain();
        assert!(encode(&rec).len() < serde_json::to_vec(&rec).unwrap().len() / 2);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let raw = encode(&full());
        for cut in 0..raw.len() {
            assert!(decode(&raw[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[9, 1, 2]).is_err());
        let mut long_id = encode(&plain());
        long_id[1] = 0xff; // a task id length that runs past the end
        assert!(decode(&long_id).is_err());
    }
}
