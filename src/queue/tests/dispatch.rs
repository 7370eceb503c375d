//! Sync match, dispatch order (priority, then fairness, then arrival), delayed tasks, and
//! routing by task type.

use super::*;

#[actix_rt::test]
async fn an_add_goes_straight_to_a_parked_poll() {
    let h = Harness::new();
    let rx = h.park("w1", None).await;
    let id = h.add(r#"{"task_type":"t","task_id":"a"}"#).await;
    let delivery = rx.await.expect("the parked poll gets the task");
    let tasks = h.accept(delivery).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!((tasks[0].task_id.as_str(), tasks[0].attempt), ("a", 1));
    assert_state(&h, &id, TaskState::Running, 1);
    let stats = h.stats().await;
    assert_eq!((stats.backlog_count, stats.in_flight_count), (0, 1));
}

#[actix_rt::test]
async fn a_parked_poll_takes_only_its_task_types() {
    let h = Harness::new();
    let mut rx = h.park("w1", Some(&["email"])).await;
    h.add(r#"{"task_type":"sms","task_id":"s"}"#).await;
    let parked = matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty));
    assert!(parked, "an sms went to an email worker");
    h.add(r#"{"task_type":"email","task_id":"e"}"#).await;
    let tasks = h.accept(rx.await.expect("delivery")).await;
    assert_eq!(tasks[0].task_id, "e");
    assert_eq!(h.poll_ids(10).await, ["s"]);
}

#[actix_rt::test]
async fn priority_comes_first_then_arrival() {
    let h = Harness::new();
    for (id, priority) in [("p3a", 3), ("p5", 5), ("p1", 1), ("p3b", 3)] {
        h.add(&format!(
            r#"{{"task_type":"t","task_id":"{id}","priority":{priority}}}"#
        ))
        .await;
    }
    assert_eq!(h.poll_ids(10).await, ["p1", "p3a", "p3b", "p5"]);
}

#[actix_rt::test]
async fn fairness_keys_take_turns() {
    let h = Harness::new();
    for i in 1..=4 {
        h.add(&format!(
            r#"{{"task_type":"t","task_id":"a{i}","fairness_key":"a"}}"#
        ))
        .await;
    }
    for i in 1..=2 {
        h.add(&format!(
            r#"{{"task_type":"t","task_id":"b{i}","fairness_key":"b"}}"#
        ))
        .await;
    }
    // b's first task runs second although it arrived fifth: a flood of a does not hold it up.
    assert_eq!(h.poll_ids(10).await, ["a1", "b1", "a2", "b2", "a3", "a4"]);
}

#[actix_rt::test]
async fn a_heavier_key_gets_its_share() {
    let h = Harness::new();
    for i in 1..=4 {
        h.add(&format!(
            r#"{{"task_type":"t","task_id":"h{i}","fairness_key":"heavy","fairness_weight":2}}"#
        ))
        .await;
        h.add(&format!(
            r#"{{"task_type":"t","task_id":"l{i}","fairness_key":"light"}}"#
        ))
        .await;
    }
    let first = h.poll_ids(6).await;
    let heavy = first.iter().filter(|id| id.starts_with('h')).count();
    assert_eq!(heavy, 4, "weight 2 takes two turns to one: {first:?}");
}

#[actix_rt::test]
async fn a_delayed_task_waits_for_its_time() {
    let h = Harness::new();
    let id = h
        .add(r#"{"task_type":"t","task_id":"d","delay_ms":5000}"#)
        .await;
    assert!(h.poll_ids(1).await.is_empty());
    assert_eq!(h.stats().await.delayed_count, 1);
    h.advance(4_999).await;
    assert!(h.poll_ids(1).await.is_empty(), "ran a millisecond early");
    h.advance(1).await;
    assert_eq!(h.poll_ids(1).await, [id]);
}
