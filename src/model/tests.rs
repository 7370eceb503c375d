//! Unit tests of the model: task ids, lease tokens, specs and their validation.

use super::*;

#[test]
fn a_generated_task_id_is_a_fresh_time_ordered_v7_uuid() {
    let new = || {
        let req: TaskSpec = serde_json::from_str(r#"{"task_type": "t"}"#).unwrap();
        req.validate().unwrap().task_id
    };
    let (a, b) = (new(), new());
    assert_ne!(a, b);
    for id in [a, b] {
        let u = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(u.get_version(), Some(uuid::Version::SortRand), "{id}");
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
    }
}

#[test]
fn names() {
    assert!(validate_name("n", "a-b_c.d:e@f9").is_ok());
    assert!(validate_name("n", "").is_err());
    assert!(validate_name("n", &"x".repeat(200)).is_ok());
    assert!(validate_name("n", &"x".repeat(201)).is_err());
    assert!(validate_name("n", "a b").is_err());
    assert!(validate_name("n", "a/b").is_err());
    assert!(validate_name("n", "é").is_err());
}

#[test]
fn backoff_grows_and_caps() {
    let p = RetryPolicy::default();
    assert_eq!(p.backoff_ms(1), 1000);
    assert_eq!(p.backoff_ms(2), 2000);
    assert_eq!(p.backoff_ms(3), 4000);
    assert_eq!(p.backoff_ms(8), 100_000);
    assert_eq!(p.backoff_ms(u32::MAX), 100_000);
    let flat = RetryPolicy {
        backoff_coefficient: 1.0,
        ..RetryPolicy::default()
    };
    assert_eq!(flat.backoff_ms(50), 1000);
}

#[test]
fn attempts_exhaust() {
    let unlimited = RetryPolicy::default();
    assert!(!unlimited.exhausted(1_000_000));
    let two = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    assert!(!two.exhausted(1));
    assert!(two.exhausted(2));
}

#[test]
fn lease_round_trips_and_rejects_garbage() {
    let t = LeaseToken {
        queue: QueueKey::new("ns", "q.1", QueueType::Workflow).unwrap(),
        task_id: "task:7".into(),
        lease_id: 0xdead_beef,
    };
    let s = t.encode();
    assert!(s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(LeaseToken::decode(&s).unwrap(), t);
    for bad in ["", "!!", "AAAA", &s[..12]] {
        assert!(LeaseToken::decode(bad).is_err(), "{bad}");
    }
}

#[test]
fn add_defaults_and_ranges() {
    let req: TaskSpec = serde_json::from_str(r#"{"task_type":"t"}"#).unwrap();
    let t = req.validate().unwrap();
    assert_eq!(t.priority, 3);
    assert_eq!(t.start_to_close_timeout_ms, 60_000);
    assert_eq!(t.retry, RetryPolicy::default());
    assert_eq!(t.payload.get(), "null");
    for body in [
        r#"{"task_type":"t","priority":0}"#,
        r#"{"task_type":"t","priority":6}"#,
        r#"{"task_type":"t","fairness_weight":0}"#,
        r#"{"task_type":"t","start_to_close_timeout_ms":99}"#,
        r#"{"task_type":"bad name"}"#,
        r#"{"task_type":"t","start_to_close_timeout_ms":18446744073709551615}"#,
        r#"{"task_type":"t","heartbeat_timeout_ms":18446744073709551615}"#,
        r#"{"task_type":"t","delay_ms":1000000000000000}"#,
        r#"{"task_type":"t","retry":{"initial_interval_ms":18446744073709551615}}"#,
    ] {
        let req: TaskSpec = serde_json::from_str(body).unwrap();
        assert!(req.validate().is_err(), "{body}");
    }
    let err = serde_json::from_str::<TaskSpec>(r#"{"task_type":"t","prio":1}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prio"), "{err}");
}

#[test]
fn route_fallback_absent_null_and_set() {
    let parse = |b: &str| {
        serde_json::from_str::<TaskSpec>(b)
            .unwrap()
            .validate()
            .unwrap()
            .route_to
            .unwrap()
            .fallback_after_ms
    };
    assert_eq!(
        parse(r#"{"task_type":"t","route_to":{"identity":"w"}}"#),
        Some(5000)
    );
    assert_eq!(
        parse(r#"{"task_type":"t","route_to":{"identity":"w","fallback_after_ms":null}}"#),
        None
    );
    assert_eq!(
        parse(r#"{"task_type":"t","route_to":{"identity":"w","fallback_after_ms":7}}"#),
        Some(7)
    );
}
