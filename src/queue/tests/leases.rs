//! Lease expiry and retry backoff, heartbeats, and the schedule-to-start timeout.

use super::*;

#[actix_rt::test]
async fn an_expired_lease_is_retried_after_the_backoff() {
    let h = Harness::new();
    let id = h
        .add(
            r#"{"task_type":"t","task_id":"x","start_to_close_timeout_ms":10000,
                "retry":{"initial_interval_ms":1000,"backoff_coefficient":2}}"#,
        )
        .await;
    assert_eq!(h.poll("w", 1).await.len(), 1);
    h.advance(9_999).await;
    assert_state(&h, &id, TaskState::Running, 1);
    h.advance(2).await;
    let rec = h.record(&id);
    assert_eq!((rec.state, rec.attempt), (TaskState::Pending, 1));
    let error = rec.last_error.expect("the timeout is the attempt's error");
    assert_eq!(error.kind.as_deref(), Some("StartToCloseTimeout"));
    assert_eq!(h.stats().await.delayed_count, 1, "in backoff");
    assert!(h.poll_ids(1).await.is_empty(), "retried before its backoff");
    h.advance(1_000).await;
    let again = h.poll("w", 1).await;
    assert_eq!((again[0].task_id.as_str(), again[0].attempt), ("x", 2));
    // The second failure waits twice as long.
    h.fail(&again[0]).await;
    h.advance(1_999).await;
    assert!(h.poll_ids(1).await.is_empty(), "second backoff too short");
    h.advance(1).await;
    assert_eq!(h.poll("w", 1).await[0].attempt, 3);
}

#[actix_rt::test]
async fn a_settle_after_the_lease_expired_is_refused() {
    let h = Harness::new();
    h.add(r#"{"task_type":"t","task_id":"x","start_to_close_timeout_ms":1000}"#)
        .await;
    let task = h.poll("w", 1).await.remove(0);
    h.advance(1_001).await;
    let late = h.settle(
        &task,
        SettleOp::Complete {
            result: crate::model::null_json(),
        },
    );
    assert!(late.await.is_err(), "a lost lease completed its task");
    assert_state(&h, "x", TaskState::Pending, 1);
}

#[actix_rt::test]
async fn heartbeats_keep_a_lease_until_they_stop() {
    let h = Harness::new();
    let id = h
        .add(
            r#"{"task_type":"t","task_id":"hb","start_to_close_timeout_ms":600000,
                "heartbeat_timeout_ms":2000,"retry":{"max_attempts":1}}"#,
        )
        .await;
    let task = h.poll("w", 1).await.remove(0);
    let lease_id = LeaseToken::decode(&task.lease).expect("token").lease_id;
    for _ in 0..3 {
        h.advance(1_500).await;
        let beat = Heartbeat {
            task_id: id.clone(),
            lease_id,
            details: None,
            lease_for_ms: None,
        };
        h.queues
            .call(&h.key, beat)
            .await
            .expect("sent")
            .expect("heartbeat accepted");
    }
    assert_state(&h, &id, TaskState::Running, 1);
    h.advance(1_999).await;
    assert_state(&h, &id, TaskState::Running, 1);
    h.advance(2).await;
    let rec = h.record(&id);
    assert_eq!(
        rec.state,
        TaskState::Failed,
        "one attempt only: a dead letter"
    );
    let kind = rec.last_error.and_then(|e| e.kind);
    assert_eq!(kind.as_deref(), Some("HeartbeatTimeout"));
    assert_eq!(h.stats().await.dead_letter_count, 1);
}

#[actix_rt::test]
async fn a_task_not_started_in_time_times_out() {
    let h = Harness::new();
    let id = h
        .add(r#"{"task_type":"t","task_id":"s","schedule_to_start_timeout_ms":5000}"#)
        .await;
    // A sweep that comes early changes nothing.
    h.advance(4_999).await;
    h.sweep_waiting(&id).await;
    assert_state(&h, &id, TaskState::Pending, 0);
    h.advance(1).await;
    h.sweep_waiting(&id).await;
    assert_state(&h, &id, TaskState::TimedOut, 0);
    assert!(h.poll_ids(1).await.is_empty());
    assert_eq!(h.stats().await.dead_letter_count, 1);
}

#[actix_rt::test]
async fn a_started_task_has_no_schedule_to_start_deadline() {
    let h = Harness::new();
    let id = h
        .add(r#"{"task_type":"t","task_id":"s","schedule_to_start_timeout_ms":5000}"#)
        .await;
    let task = h.poll("w", 1).await.remove(0);
    h.advance(6_000).await;
    h.sweep_waiting(&id).await;
    h.complete(&task).await;
    assert_state(&h, &id, TaskState::Completed, 1);
}
