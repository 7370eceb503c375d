//! Property tests (proptest) for the encodings and the validation at the server's edges.
//!
//! - Lease tokens: every valid (queue, task id, lease id) round-trips through
//!   `LeaseToken::encode` / `decode` as URL-safe text; decoding any string or any bytes never
//!   panics, and whatever decodes re-encodes to the same token.
//! - Storage keys: ready keys sort exactly as (priority, order, seq) tuples and decode back;
//!   delayed and expiry keys sort by time first; `Entry` (with and without a route),
//!   `split_queue`, `expiry_key` / `decode_expiry` round-trip; decoding arbitrary bytes never
//!   panics.
//! - Add requests: arbitrary bytes and arbitrary JSON through
//!   `serde_json::from_slice::<TaskSpec>` and `.validate()` never panic; valid requests
//!   are accepted with their values (or the contract's defaults); values out of range and bad
//!   names are rejected, and unknown fields are rejected by name.
//!
//! Case counts are kept moderate so the whole file runs in a few seconds.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use tasq::model::{
    validate_identity, validate_name, LeaseToken, QueueKey, QueueType, TaskSpec, MAX_DURATION_MS,
};
use tasq::storage::sled_store::keys;
use tasq::storage::{Entry, EntryRoute, ReadyPos};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid name: 1–200 of `A–Z a–z 0–9 . _ - : @`.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9._:@-]{1,12}",
        1 => "[A-Za-z0-9._:@-]{1,200}",
    ]
}

/// The contract's rule for names, written independently of the server's code.
fn is_valid_name(s: &str) -> bool {
    let n = s.chars().count();
    (1..=200).contains(&n)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:@".contains(c))
}

/// A valid identity: 1–200 printable characters.
fn identity() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9@.-]{1,20}", "\\PC{1,200}",]
}

fn queue_type() -> impl Strategy<Value = QueueType> {
    prop_oneof![Just(QueueType::Activity), Just(QueueType::Workflow)]
}

fn queue_key() -> impl Strategy<Value = QueueKey> {
    (name(), name(), queue_type())
        .prop_map(|(ns, q, ty)| QueueKey::new(&ns, &q, ty).expect("valid names"))
}

fn lease_token() -> impl Strategy<Value = LeaseToken> {
    (queue_key(), name(), any::<u64>()).prop_map(|(queue, task_id, lease_id)| LeaseToken {
        queue,
        task_id,
        lease_id,
    })
}

/// Raw token bytes that look like a token often enough to reach every branch of `decode`:
/// right or wrong version byte, a type tag or not, NULs in varying numbers.
fn token_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        Just(vec![0u8]),
        "[A-Za-z0-9._:@-]{0,8}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    (
        prop_oneof![Just(1u8), any::<u8>()],
        prop::collection::vec(any::<u8>(), 0..=8),
        prop_oneof![Just(b'a'), Just(b'w'), any::<u8>()],
        prop::collection::vec(part, 0..6),
    )
        .prop_map(|(version, id, tag, parts)| {
            let mut raw = vec![version];
            raw.extend(id);
            raw.push(tag);
            raw.extend(parts.into_iter().flatten());
            raw
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn lease_tokens_round_trip(token in lease_token()) {
        let text = token.encode();
        prop_assert!(
            text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "not URL-safe: {text}"
        );
        prop_assert_eq!(LeaseToken::decode(&text).ok(), Some(token));
    }

    #[test]
    fn lease_decode_of_any_string_never_panics(s in any::<String>()) {
        if let Ok(t) = LeaseToken::decode(&s) {
            prop_assert_eq!(t.encode(), s);
        }
    }

    #[test]
    fn lease_decode_of_base64_text_never_panics(s in "[A-Za-z0-9_-]{0,300}") {
        if let Ok(t) = LeaseToken::decode(&s) {
            prop_assert_eq!(t.encode(), s);
        }
    }

    #[test]
    fn lease_decode_of_any_bytes_never_panics(raw in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        token_like_bytes(),
    ]) {
        let text = URL_SAFE_NO_PAD.encode(&raw);
        match LeaseToken::decode(&text) {
            // Whatever decodes was a well-formed token: it encodes to the same bytes.
            Ok(t) => prop_assert_eq!(t.encode(), text),
            Err(e) => prop_assert_eq!(e.code(), "lease_lost"),
        }
    }

    #[test]
    fn lease_decode_of_damaged_tokens_never_panics(
        token in lease_token(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        // One byte of a real token changed, or the token cut short.
        let mut raw = URL_SAFE_NO_PAD.decode(token.encode()).unwrap();
        let i = at.index(raw.len());
        if cut {
            raw.truncate(i);
        } else {
            raw[i] = byte;
        }
        let text = URL_SAFE_NO_PAD.encode(&raw);
        if let Ok(t) = LeaseToken::decode(&text) {
            prop_assert_eq!(t.encode(), text);
        }
    }

    #[test]
    fn name_validation_matches_the_contract(s in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9._:@ /é-]{0,210}",
        name(),
    ]) {
        prop_assert_eq!(validate_name("n", &s).is_ok(), is_valid_name(&s), "{:?}", s);
        prop_assert_eq!(
            QueueKey::new(&s, "q", QueueType::Activity).is_ok(),
            is_valid_name(&s)
        );
    }

    #[test]
    fn ready_keys_sort_as_dispatch_tuples(
        queue in queue_key(),
        a in (any::<u8>(), any::<u64>(), any::<u64>()),
        b in (any::<u8>(), any::<u64>(), any::<u64>()),
    ) {
        let pos = |(priority, order, seq): (u8, u64, u64)| ReadyPos { priority, order, seq };
        let (pa, pb) = (pos(a), pos(b));
        let (ka, kb) = (pa.key(&queue), pb.key(&queue));
        prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        let prefix = keys::queue_prefix(&queue);
        prop_assert!(ka.starts_with(&prefix));
        prop_assert_eq!(ReadyPos::decode(&ka[prefix.len()..]), Some(pa));
        let (q, rest) = keys::split_queue(&ka).expect("a ready key splits");
        prop_assert_eq!(&q, &queue);
        prop_assert_eq!(ReadyPos::decode(rest), Some(pa));
    }

    #[test]
    fn ready_keys_of_many_sort_in_dispatch_order(
        queue in queue_key(),
        mut positions in prop::collection::vec(
            (1u8..=5, 0u64..4, any::<u64>()), 0..40),
    ) {
        let mut by_key: Vec<(Vec<u8>, (u8, u64, u64))> = positions
            .iter()
            .map(|&(priority, order, seq)| (ReadyPos { priority, order, seq }.key(&queue), (priority, order, seq)))
            .collect();
        by_key.sort();
        positions.sort();
        let order: Vec<_> = by_key.into_iter().map(|(_, p)| p).collect();
        prop_assert_eq!(order, positions);
    }

    #[test]
    fn delayed_and_expiry_keys_sort_by_time_first(
        qa in queue_key(),
        qb in queue_key(),
        ta in any::<u64>(),
        tb in any::<u64>(),
        sa in any::<u64>(),
        sb in any::<u64>(),
        ida in name(),
        idb in name(),
    ) {
        // Delayed keys of one queue: (due, seq) order.
        let (da, db) = (keys::delayed_key(&qa, ta, sa), keys::delayed_key(&qa, tb, sb));
        prop_assert_eq!(da.cmp(&db), (ta, sa).cmp(&(tb, sb)));
        let prefix = keys::queue_prefix(&qa);
        prop_assert_eq!(keys::decode_delayed(&da[prefix.len()..]), Some((ta, sa)));
        // Expiry keys across queues: time first, whatever the queue.
        if ta != tb {
            let (ea, eb) = (keys::expiry_key(ta, &qa, &ida), keys::expiry_key(tb, &qb, &idb));
            prop_assert_eq!(ea.cmp(&eb), ta.cmp(&tb));
        }
    }

    #[test]
    fn expiry_and_task_keys_round_trip(
        at in any::<u64>(),
        queue in queue_key(),
        task_id in name(),
    ) {
        let k = keys::expiry_key(at, &queue, &task_id);
        prop_assert_eq!(keys::decode_expiry(&k), Some((at, queue.clone(), task_id.clone())));
        let t = keys::task_key(&queue, &task_id);
        let (q, rest) = keys::split_queue(&t).expect("a task key splits");
        prop_assert_eq!(q, queue.clone());
        prop_assert_eq!(rest, task_id.as_bytes());
        prop_assert!(t.starts_with(&keys::namespace_prefix(queue.namespace())));
    }

    #[test]
    fn queue_prefixes_never_nest(a in queue_key(), b in queue_key()) {
        // A prefix scan of one queue never reads another's keys.
        let (pa, pb) = (keys::queue_prefix(&a), keys::queue_prefix(&b));
        prop_assert_eq!(pb.starts_with(&pa), a == b);
    }

    #[test]
    fn entries_round_trip(
        // Priorities are 1–5 (the byte's top bit flags a serial key).
        priority in 1u8..=5,
        task_type in name(),
        task_id in name(),
        ready_at in any::<u64>(),
        // `u64::MAX` is the encoding of "never fall back", so a real instant stays below it.
        route in proptest::option::of((identity(), proptest::option::of(0..u64::MAX))),
        serial_key in proptest::option::of(proptest::option::of(name())),
    ) {
        let entry = Entry {
            priority,
            task_type: task_type.into(),
            task_id: task_id.into(),
            ready_at,
            route: route.map(|(identity, fallback_at)| Box::new(EntryRoute { identity, fallback_at })),
            // A serial task's key, or "" for one without a fairness key.
            serial_key: serial_key.map(|k| k.unwrap_or_default().into()),
        };
        prop_assert_eq!(Entry::decode(&entry.encode()), Some(entry));
    }

    #[test]
    fn key_decoders_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Entry::decode(&raw);
        let _ = ReadyPos::decode(&raw);
        let _ = keys::decode_delayed(&raw);
        if let Some((at, q, id)) = keys::decode_expiry(&raw) {
            // A decodable expiry key encodes back to itself (names read back unchecked).
            prop_assert_eq!(keys::expiry_key(at, &q, &id), raw.clone());
        }
        if let Some((q, rest)) = keys::split_queue(&raw) {
            let mut again = keys::queue_prefix(&q);
            again.extend_from_slice(rest);
            prop_assert_eq!(again, raw);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Add requests
// ------------------------------------------------------------------------------------------

/// Field names of an add (and its nested objects), so arbitrary JSON reaches the validation.
const FIELDS: &[&str] = &[
    "task_type",
    "payload",
    "task_id",
    "priority",
    "fairness_key",
    "fairness_weight",
    "delay_ms",
    "schedule_to_start_timeout_ms",
    "start_to_close_timeout_ms",
    "heartbeat_timeout_ms",
    "retry",
    "route_to",
    "headers",
    "max_attempts",
    "initial_interval_ms",
    "backoff_coefficient",
    "maximum_interval_ms",
    "identity",
    "fallback_after_ms",
];

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(String::from),
        1 => ".{0,10}",
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-10i64..300_000).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-10.0f64..2000.0).prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        ".{0,12}".prop_map(Value::String),
        name().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON text of an add-like object: known fields with arbitrary values, sometimes cut short.
fn add_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::btree_map(field_name(), json_value(), 0..14),
        any::<prop::sample::Index>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(fields, cut, truncate)| {
            let mut bytes = serde_json::to_vec(&fields).expect("a map serializes");
            if truncate && !bytes.is_empty() {
                bytes.truncate(cut.index(bytes.len()));
            }
            bytes
        })
}

fn parse_and_validate(bytes: &[u8]) -> Result<tasq::model::NewTask, String> {
    serde_json::from_slice::<TaskSpec>(bytes)
        .map_err(|e| e.to_string())?
        .validate()
        .map_err(|e| e.to_string())
}

/// A `retry` object as sent: (max_attempts, initial_interval_ms, backoff_coefficient in
/// hundredths, how far maximum_interval_ms lies above the initial interval), each optional.
type RetrySpec = (Option<u32>, Option<u64>, Option<u32>, Option<u64>);

/// A valid add, as the fields a client may send, with how each should come back.
#[derive(Debug, Clone)]
struct ValidAdd {
    task_type: String,
    task_id: Option<String>,
    priority: Option<i64>,
    fairness_key: Option<String>,
    /// In thousandths: exact in JSON both ways.
    fairness_milli: Option<u32>,
    delay_ms: Option<u64>,
    schedule_to_start_timeout_ms: Option<u64>,
    start_to_close_timeout_ms: Option<u64>,
    heartbeat_timeout_ms: Option<u64>,
    retry: Option<RetrySpec>,
    /// identity, and fallback: absent / null / value.
    route_to: Option<(String, Option<Option<u64>>)>,
    headers: Option<BTreeMap<String, String>>,
    payload: Option<Value>,
}

fn valid_add() -> impl Strategy<Value = ValidAdd> {
    use proptest::option::of;
    (
        (
            name(),
            of(name()),
            of(1i64..=5),
            of(name()),
            of(1u32..=1_000_000),
            of(0..=MAX_DURATION_MS),
            of(1..=MAX_DURATION_MS),
        ),
        (
            of(100..=MAX_DURATION_MS),
            of(1..=MAX_DURATION_MS),
            of((
                of(any::<u32>()),
                of(1u64..=1_000_000_000),
                of(100u32..=100_000),
                of(0u64..=1_000_000_000),
            )),
            of((identity(), of(of(0..=MAX_DURATION_MS)))),
            of(prop::collection::btree_map(".{0,10}", ".{0,20}", 0..4)),
            of(json_value()),
        ),
    )
        .prop_map(
            |(
                (task_type, task_id, priority, fairness_key, fairness_milli, delay_ms, s2s),
                (s2c, hb, retry, route_to, headers, payload),
            )| ValidAdd {
                task_type,
                task_id,
                priority,
                fairness_key,
                fairness_milli,
                delay_ms,
                schedule_to_start_timeout_ms: s2s,
                start_to_close_timeout_ms: s2c,
                heartbeat_timeout_ms: hb,
                retry,
                route_to,
                headers,
                payload,
            },
        )
}

impl ValidAdd {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("task_type".into(), json!(self.task_type));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put("task_id", self.task_id.clone().map(Value::from));
        put("priority", self.priority.map(Value::from));
        put("fairness_key", self.fairness_key.clone().map(Value::from));
        put(
            "fairness_weight",
            self.fairness_milli.map(|k| json!(f64::from(k) / 1000.0)),
        );
        put("delay_ms", self.delay_ms.map(Value::from));
        put(
            "schedule_to_start_timeout_ms",
            self.schedule_to_start_timeout_ms.map(Value::from),
        );
        put(
            "start_to_close_timeout_ms",
            self.start_to_close_timeout_ms.map(Value::from),
        );
        put(
            "heartbeat_timeout_ms",
            self.heartbeat_timeout_ms.map(Value::from),
        );
        put(
            "retry",
            self.retry
                .map(|(max_attempts, initial, coefficient, extra)| {
                    let mut r = Map::new();
                    if let Some(n) = max_attempts {
                        r.insert("max_attempts".into(), json!(n));
                    }
                    if let Some(i) = initial {
                        r.insert("initial_interval_ms".into(), json!(i));
                    }
                    if let Some(c) = coefficient {
                        r.insert("backoff_coefficient".into(), json!(f64::from(c) / 100.0));
                    }
                    if let Some(x) = extra {
                        r.insert(
                            "maximum_interval_ms".into(),
                            json!(initial.unwrap_or(1000) + x),
                        );
                    }
                    Value::Object(r)
                }),
        );
        put(
            "route_to",
            self.route_to.clone().map(|(identity, fallback)| {
                let mut r = Map::new();
                r.insert("identity".into(), json!(identity));
                if let Some(f) = fallback {
                    r.insert("fallback_after_ms".into(), json!(f));
                }
                Value::Object(r)
            }),
        );
        put("headers", self.headers.clone().map(|h| json!(h)));
        put("payload", self.payload.clone());
        Value::Object(m)
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn add_validation_never_panics_on_bytes(raw in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        add_like_bytes(),
    ]) {
        let _ = parse_and_validate(&raw);
    }

    #[test]
    fn add_validation_never_panics_on_json(v in json_value()) {
        let _ = parse_and_validate(&serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn valid_adds_are_accepted_with_their_values(add in valid_add()) {
        let body = serde_json::to_string(&add.to_json()).unwrap();
        let task = parse_and_validate(body.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{body}: {e}")))?;
        prop_assert_eq!(&task.task_type, &add.task_type);
        match &add.task_id {
            Some(id) => prop_assert_eq!(&task.task_id, id),
            // Generated: a valid name, so it can be used in paths.
            None => prop_assert!(is_valid_name(&task.task_id)),
        }
        prop_assert_eq!(i64::from(task.priority), add.priority.unwrap_or(3));
        prop_assert_eq!(&task.fairness_key, &add.fairness_key);
        prop_assert_eq!(
            task.fairness_weight,
            add.fairness_milli.map_or(1.0, |k| f64::from(k) / 1000.0)
        );
        prop_assert_eq!(task.delay_ms, add.delay_ms.unwrap_or(0));
        prop_assert_eq!(task.schedule_to_start_timeout_ms, add.schedule_to_start_timeout_ms);
        prop_assert_eq!(task.start_to_close_timeout_ms, add.start_to_close_timeout_ms.unwrap_or(60_000));
        prop_assert_eq!(task.heartbeat_timeout_ms, add.heartbeat_timeout_ms);
        let (max_attempts, initial, coefficient, extra) = add.retry.unwrap_or_default();
        let initial = initial.unwrap_or(1000);
        prop_assert_eq!(task.retry.max_attempts, max_attempts.unwrap_or(0));
        prop_assert_eq!(task.retry.initial_interval_ms, initial);
        prop_assert_eq!(
            task.retry.backoff_coefficient,
            coefficient.map_or(2.0, |c| f64::from(c) / 100.0)
        );
        prop_assert_eq!(
            task.retry.maximum_interval_ms,
            extra.map_or(initial.saturating_mul(100), |x| initial + x)
        );
        match (&add.route_to, &task.route_to) {
            (None, None) => {}
            (Some((identity, fallback)), Some(route)) => {
                prop_assert_eq!(&route.identity, identity);
                prop_assert_eq!(route.fallback_after_ms, fallback.unwrap_or(Some(5000)));
            }
            (want, got) => prop_assert!(false, "route_to: sent {:?}, got {:?}", want, got),
        }
        prop_assert_eq!(&task.headers, &add.headers.clone().unwrap_or_default());
        // The payload is kept as the exact text sent (null when absent).
        let payload = add.payload.as_ref().map_or("null".to_string(), |p| p.to_string());
        prop_assert_eq!(task.payload.get(), payload);
    }

    #[test]
    fn priorities_outside_1_to_5_are_rejected(p in any::<i64>()) {
        let body = json!({"task_type": "t", "priority": p}).to_string();
        prop_assert_eq!(parse_and_validate(body.as_bytes()).is_ok(), (1..=5).contains(&p));
    }

    #[test]
    fn fairness_weights_outside_the_range_are_rejected(w in prop_oneof![
        any::<f64>().prop_filter("finite", |w| w.is_finite()),
        -1.0f64..1.0,
        999.0f64..1001.0,
    ]) {
        let body = json!({"task_type": "t", "fairness_weight": w}).to_string();
        // The server reads back the JSON text, so compare against what it reads.
        let sent: f64 = serde_json::from_str(&json!(w).to_string()).unwrap();
        prop_assert_eq!(
            parse_and_validate(body.as_bytes()).is_ok(),
            (0.001..=1000.0).contains(&sent)
        );
    }

    #[test]
    fn short_leases_are_rejected(ms in 0u64..200) {
        let body = json!({"task_type": "t", "start_to_close_timeout_ms": ms}).to_string();
        prop_assert_eq!(parse_and_validate(body.as_bytes()).is_ok(), ms >= 100);
    }

    #[test]
    fn names_are_checked_in_every_name_field(
        bad in "[A-Za-z0-9._:@ /é-]{0,210}",
        field in prop::sample::select(&["task_type", "task_id", "fairness_key"][..]),
    ) {
        let mut body = json!({"task_type": "t"});
        body[field] = json!(bad);
        let result = parse_and_validate(body.to_string().as_bytes());
        prop_assert_eq!(result.is_ok(), is_valid_name(&bad), "{}", body);
    }

    #[test]
    fn route_identities_must_be_printable(identity in prop_oneof![
        any::<String>(),
        identity(),
    ]) {
        let body = json!({"task_type": "t", "route_to": {"identity": identity}}).to_string();
        prop_assert_eq!(
            parse_and_validate(body.as_bytes()).is_ok(),
            validate_identity(&identity).is_ok()
        );
        let printable = (1..=200).contains(&identity.chars().count())
            && !identity.chars().any(char::is_control);
        prop_assert_eq!(validate_identity(&identity).is_ok(), printable);
    }

    #[test]
    fn unknown_fields_are_rejected_by_name(
        key in "[a-z_]{1,20}".prop_filter("not a field", |k| !FIELDS[..13].contains(&k.as_str())),
        v in json_value(),
    ) {
        let mut body = Map::new();
        body.insert("task_type".into(), json!("t"));
        body.insert(key.clone(), v);
        let err = parse_and_validate(&serde_json::to_vec(&body).unwrap())
            .expect_err("an unknown field is rejected");
        prop_assert!(err.contains(&key), "{}", err);
    }
}
