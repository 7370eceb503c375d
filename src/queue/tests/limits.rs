//! The dispatch throttle and pause, and the idle stop.

use super::*;
use crate::model::rate::RateLimit;

async fn set_limit(h: &Harness, limit: Option<RateLimit>) {
    let msg = SetConfig { rate_limit: limit };
    let applied = h
        .queues
        .call(&h.key, msg)
        .await
        .expect("sent")
        .expect("set");
    applied.wait(&*h.store).await.expect("durable");
}

async fn add_n(h: &Harness, n: usize) {
    for i in 0..n {
        h.add(&format!(r#"{{"task_type":"t","task_id":"t{i}"}}"#))
            .await;
    }
}

#[actix_rt::test]
async fn the_throttle_spends_its_burst_then_one_per_interval() {
    let h = Harness::new();
    add_n(&h, 5).await;
    let limit = RateLimit {
        max_tasks_per_second: 2.0,
        burst: 2,
    };
    set_limit(&h, Some(limit)).await;
    assert_eq!(h.poll_ids(5).await.len(), 2, "the burst");
    assert!(h.poll_ids(5).await.is_empty(), "no token left");
    h.advance(499).await;
    assert!(h.poll_ids(5).await.is_empty(), "a token came early");
    h.advance(1).await;
    assert_eq!(h.poll_ids(5).await.len(), 1);
    set_limit(&h, None).await;
    assert_eq!(h.poll_ids(5).await.len(), 2, "no limit: the rest at once");
}

#[actix_rt::test]
async fn a_paused_queue_dispatches_nothing_until_resumed() {
    let h = Harness::new();
    add_n(&h, 2).await;
    let pause = RateLimit {
        max_tasks_per_second: 0.0,
        burst: 1,
    };
    set_limit(&h, Some(pause)).await;
    // The poll parks for a minute of the clock: within it, a pause holds everything.
    let mut rx = h.park("w", None).await;
    h.advance(30_000).await;
    assert!(h.poll_ids(1).await.is_empty());
    let parked = matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty));
    assert!(parked, "a paused queue served (or dropped) a parked poll");
    assert_eq!(h.stats().await.backlog_count, 2);
    set_limit(&h, None).await;
    let delivered = h.accept(rx.await.expect("resumed")).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(h.poll_ids(5).await.len(), 1);
}

#[actix_rt::test]
async fn an_idle_queue_stops_and_comes_back_with_its_state() {
    let config = Config {
        queue_idle_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let h = Harness::with_config(config);
    let task = {
        h.add(r#"{"task_type":"t","task_id":"done"}"#).await;
        h.poll("w", 1).await.remove(0)
    };
    h.complete(&task).await;
    // A lease still out keeps it loaded however long it waits.
    h.add(r#"{"task_type":"t","task_id":"held","start_to_close_timeout_ms":7200000}"#)
        .await;
    let held = h.poll("w", 1).await.remove(0);
    h.advance(3_600_000).await;
    assert!(h.queues.is_loaded(&h.key), "stopped with a lease out");
    h.complete(&held).await;
    h.advance(59_999).await;
    assert!(
        h.queues.is_loaded(&h.key),
        "stopped before its idle timeout"
    );
    h.clock.advance(Duration::from_millis(1));
    h.queues.call(&h.key, Tick).await.expect("tick");
    // The registry forgets the actor when it hears it stopped.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.queues.is_loaded(&h.key) {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle queue never stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The next request loads it again, with what it held.
    assert_state(&h, "done", TaskState::Completed, 1);
    h.add(r#"{"task_type":"t","task_id":"later"}"#).await;
    assert_eq!(h.poll_ids(1).await, ["later"]);
}
