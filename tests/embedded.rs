//! The embedding API (`tasq::Tasq`) in-process, with a temporary store and no network port:
//! add, batch, long poll (parking, wait, max_tasks, task_types, giving up), settle, heartbeat,
//! status and wait, cancel, describe, typed errors, shutdown, the HTTP API mounted on an
//! embedder's `App`, and metrics on an embedder's registry.

use std::future::Future;
use std::time::Duration;

use actix_web::{test as atest, App};
use serde_json::{json, Value};
use tasq::model::{RetryPolicy, TaskState};
use tasq::{Config, Error, Failure, PollSpec, QueueKey, QueueType, TaskSpec, Tasq};

/// Runs `f` with a fresh temporary tasq in its own actix system, then shuts it down.
fn with_tasq<F, Fut>(f: F)
where
    F: FnOnce(Tasq) -> Fut,
    Fut: Future<Output = ()>,
{
    actix_rt::System::new().block_on(async move {
        let tasq = Tasq::builder(Config::default())
            .temporary()
            .start()
            .await
            .expect("start an embedded tasq");
        f(tasq.clone()).await;
        tasq.shutdown().await.expect("shutdown");
    });
}

fn queue(name: &str) -> QueueKey {
    QueueKey::new("default", name, QueueType::Activity).expect("valid queue name")
}

fn json_of(raw: &Option<Box<serde_json::value::RawValue>>) -> Value {
    raw.as_ref()
        .map(|r| serde_json::from_str(r.get()).expect("stored JSON"))
        .unwrap_or(Value::Null)
}

#[test]
fn add_poll_complete_status() {
    with_tasq(|t| async move {
        let q = queue("emails");
        let added = t
            .add(
                &q,
                TaskSpec::new("send-email")
                    .task_id("e-1")
                    .payload(json!({"to": "a@example.com"}))
                    .header("trace-id", "abc"),
            )
            .await
            .unwrap();
        assert_eq!(added.task_id, "e-1");
        assert!(!added.duplicate);
        let again = t
            .add(&q, TaskSpec::new("send-email").task_id("e-1"))
            .await
            .unwrap();
        assert!(again.duplicate, "same id is a duplicate");

        let tasks = t
            .poll(&q, PollSpec::new("w-1").wait(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(tasks.len(), 1);
        let task = &tasks[0];
        assert_eq!(task.task_id, "e-1");
        assert_eq!(task.attempt, 1);
        assert_eq!(
            task.headers.get("trace-id").map(String::as_str),
            Some("abc")
        );
        let payload: Value = serde_json::from_str(task.payload.get()).unwrap();
        assert_eq!(payload, json!({"to": "a@example.com"}));
        assert_eq!(t.status(&q, "e-1").await.unwrap().state, TaskState::Running);

        let done = t.complete(&task.lease, json!({"id": "m-1"})).await.unwrap();
        assert_eq!(done.state, TaskState::Completed);
        // Repeating the same settle answers the same.
        let repeat = t.complete(&task.lease, json!({"id": "m-1"})).await.unwrap();
        assert_eq!(repeat.state, TaskState::Completed);
        // A different settle of a settled lease is lease_lost.
        let err = t.fail(&task.lease, Failure::new("late")).await.unwrap_err();
        assert_eq!(err.code(), "lease_lost");

        let info = t.status(&q, "e-1").await.unwrap();
        assert_eq!(info.state, TaskState::Completed);
        assert_eq!(json_of(&info.result), json!({"id": "m-1"}));
        let as_json = serde_json::to_value(&info).unwrap();
        for field in [
            "task_id",
            "task_type",
            "state",
            "attempt",
            "added_at",
            "updated_at",
        ] {
            assert!(as_json.get(field).is_some(), "{field} in {as_json}");
        }
    });
}

#[test]
fn errors_are_typed_with_the_http_codes() {
    with_tasq(|t| async move {
        let q = queue("errors");
        let e = t.status(&q, "missing").await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
        assert_eq!(e.code(), "not_found");
        let e = t.add(&q, TaskSpec::new("bad type name")).await.unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        let e = t.add(&q, TaskSpec::new("t").priority(9)).await.unwrap_err();
        assert!(e.to_string().contains("priority"), "{e}");
        let e = t
            .add(
                &q,
                TaskSpec::new("t").start_to_close_timeout(Duration::from_millis(5)),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        let e = t
            .poll(&q, PollSpec::new("w").max_tasks(0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        let e = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(301)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        let e = t.complete("not-a-lease", Value::Null).await.unwrap_err();
        assert_eq!(e.code(), "lease_lost");
        let e = t.heartbeat("AAAA", None).await.unwrap_err();
        assert_eq!(e.code(), "lease_lost");
    });
}

#[test]
fn batch_is_all_or_nothing() {
    with_tasq(|t| async move {
        let q = queue("batch");
        let e = t
            .add_batch(
                &q,
                vec![
                    TaskSpec::new("ok").task_id("b-1"),
                    TaskSpec::new("ok").task_id("b 2"),
                ],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert!(e.to_string().contains("tasks[1]"), "{e}");
        assert_eq!(t.status(&q, "b-1").await.unwrap_err().code(), "not_found");
        let e = t.add_batch(&q, Vec::new()).await.unwrap_err();
        assert_eq!(e.code(), "invalid_argument");

        let results = t
            .add_batch(
                &q,
                (1..=3).map(|i| TaskSpec::new("ok").task_id(format!("b-{i}"))),
            )
            .await
            .unwrap();
        let ids: Vec<_> = results.iter().map(|r| r.task_id.as_str()).collect();
        assert_eq!(ids, ["b-1", "b-2", "b-3"]);
        let stats = t.describe(&q).await.unwrap();
        assert_eq!(stats.backlog_count, 3);
    });
}

#[test]
fn parked_poll_gets_a_task_added_later() {
    with_tasq(|t| async move {
        let q = queue("parked");
        let poller = {
            let (t, q) = (t.clone(), q.clone());
            actix_rt::spawn(async move {
                t.poll(&q, PollSpec::new("w-park").wait(Duration::from_secs(60)))
                    .await
            })
        };
        // Wait (bounded) until the poll is parked, then add.
        let mut parked = false;
        for _ in 0..400 {
            if t.describe(&q).await.unwrap().parked_polls == 1 {
                parked = true;
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(parked, "the poll never parked");
        t.add(&q, TaskSpec::new("x").task_id("p-1")).await.unwrap();
        let tasks = poller.await.unwrap().unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].task_id, "p-1");
        let stats = t.describe(&q).await.unwrap();
        assert!(stats.pollers.iter().any(|p| p.identity == "w-park"));
    });
}

#[test]
fn poll_wait_passes_empty_and_filters_by_type_and_count() {
    with_tasq(|t| async move {
        let q = queue("filters");
        let none = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_millis(50)))
            .await
            .unwrap();
        assert!(none.is_empty());
        for i in 0..5 {
            t.add(&q, TaskSpec::new("a").task_id(format!("a-{i}")))
                .await
                .unwrap();
        }
        t.add(&q, TaskSpec::new("b").task_id("b-0")).await.unwrap();
        let bs = t
            .poll(
                &q,
                PollSpec::new("w")
                    .task_types(["b"])
                    .max_tasks(10)
                    .wait(Duration::ZERO),
            )
            .await
            .unwrap();
        assert_eq!(bs.len(), 1);
        assert_eq!(bs[0].task_type, "b");
        let three = t
            .poll(&q, PollSpec::new("w").max_tasks(3).wait(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(three.len(), 3);
        assert!(three.iter().all(|t| t.task_type == "a"));
    });
}

#[test]
fn a_dropped_poll_is_forgotten_and_takes_no_task() {
    with_tasq(|t| async move {
        let q = queue("dropped");
        // A poll given up by the embedder (future dropped while parked)…
        let gave_up = actix_rt::time::timeout(
            Duration::from_millis(100),
            t.poll(&q, PollSpec::new("gone").wait(Duration::from_secs(60))),
        )
        .await;
        assert!(gave_up.is_err(), "nothing was there to take");
        // …takes nothing: the next poll gets the task at once.
        t.add(&q, TaskSpec::new("x").task_id("d-1")).await.unwrap();
        let tasks = t
            .poll(&q, PollSpec::new("here").wait(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            tasks[0].attempt, 1,
            "it was never leased to the dropped poll"
        );
    });
}

#[test]
fn fail_retries_then_dead_letters() {
    with_tasq(|t| async move {
        let q = queue("failing");
        let policy = RetryPolicy {
            max_attempts: 2,
            initial_interval_ms: 1,
            backoff_coefficient: 1.0,
            maximum_interval_ms: 1,
        };
        t.add(&q, TaskSpec::new("x").task_id("f-1").retry(policy))
            .await
            .unwrap();
        let first = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(10)))
            .await
            .unwrap();
        let s = t
            .fail(&first[0].lease, Failure::new("boom").kind("Boom"))
            .await
            .unwrap();
        assert_eq!(s.state, TaskState::Pending);
        assert!(s.next_attempt_at.is_some());
        let second = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(second[0].attempt, 2);
        let s = t
            .fail(&second[0].lease, Failure::new("boom again"))
            .await
            .unwrap();
        assert_eq!(s.state, TaskState::Failed);
        let info = t.status(&q, "f-1").await.unwrap();
        assert_eq!(info.last_error.unwrap().message, "boom again");
        assert_eq!(t.describe(&q).await.unwrap().dead_letter_count, 1);

        t.add(&q, TaskSpec::new("x").task_id("f-2")).await.unwrap();
        let task = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(10)))
            .await
            .unwrap();
        let s = t
            .fail(&task[0].lease, Failure::new("bad input").non_retryable())
            .await
            .unwrap();
        assert_eq!(s.state, TaskState::Failed);
    });
}

#[test]
fn heartbeat_extends_and_reports_cancel() {
    with_tasq(|t| async move {
        let q = queue("beats");
        t.add(
            &q,
            TaskSpec::new("x")
                .task_id("h-1")
                .heartbeat_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
        let task = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(10)))
            .await
            .unwrap()
            .remove(0);
        let beat = t
            .heartbeat(&task.lease, Some(json!({"progress": 0.5})))
            .await
            .unwrap();
        assert!(!beat.cancel_requested);
        let info = t.cancel(&q, "h-1").await.unwrap();
        assert_eq!(info.state, TaskState::Running);
        let beat = t.heartbeat(&task.lease, None).await.unwrap();
        assert!(beat.cancel_requested);

        t.add(
            &q,
            TaskSpec::new("x")
                .task_id("h-2")
                .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        let info = t.cancel(&q, "h-2").await.unwrap();
        assert_eq!(info.state, TaskState::Cancelled);
    });
}

#[test]
fn wait_returns_once_the_task_ends() {
    with_tasq(|t| async move {
        let q = queue("waiting");
        t.add(&q, TaskSpec::new("x").task_id("w-1")).await.unwrap();
        let waiter = {
            let (t, q) = (t.clone(), q.clone());
            actix_rt::spawn(async move { t.wait(&q, "w-1", Duration::from_secs(60)).await })
        };
        let task = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(10)))
            .await
            .unwrap()
            .remove(0);
        t.complete(&task.lease, json!(42)).await.unwrap();
        let info = waiter.await.unwrap().unwrap();
        assert_eq!(info.state, TaskState::Completed);
        assert_eq!(json_of(&info.result), json!(42));
        // A short wait on a pending task answers its status when the time is up.
        t.add(&q, TaskSpec::new("x").task_id("w-2")).await.unwrap();
        let info = t.wait(&q, "w-2", Duration::from_millis(20)).await.unwrap();
        assert_eq!(info.state, TaskState::Pending);
    });
}

#[test]
fn shutdown_answers_parked_polls_and_then_unavailable() {
    actix_rt::System::new().block_on(async {
        let t = Tasq::builder(Config::default())
            .temporary()
            .start()
            .await
            .unwrap();
        let q = queue("stopping");
        let poller = {
            let (t, q) = (t.clone(), q.clone());
            actix_rt::spawn(async move {
                t.poll(&q, PollSpec::new("w").wait(Duration::from_secs(120)))
                    .await
            })
        };
        for _ in 0..400 {
            if t.describe(&q).await.unwrap().parked_polls == 1 {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        t.shutdown().await.unwrap();
        let answered = actix_rt::time::timeout(Duration::from_secs(30), poller)
            .await
            .expect("the parked poll is answered on shutdown")
            .unwrap()
            .unwrap();
        assert!(answered.is_empty());
        let e = t.add(&q, TaskSpec::new("x")).await.unwrap_err();
        assert_eq!(e.code(), "unavailable");
        t.shutdown().await.expect("a second shutdown does no harm");
    });
}

#[test]
fn start_outside_an_actix_system_is_an_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(Tasq::builder(Config::default()).temporary().start())
        .unwrap_err();
    assert_eq!(e.code(), "unavailable");
    assert!(e.to_string().contains("actix"), "{e}");
}

#[test]
fn http_api_mounts_on_the_embedders_app_and_metrics_on_its_registry() {
    actix_rt::System::new().block_on(async {
        let registry = prometheus::Registry::new();
        let own =
            prometheus::IntCounter::new("embedder_requests_total", "The embedder's own.").unwrap();
        registry.register(Box::new(own.clone())).unwrap();
        own.inc();
        let t = Tasq::builder(Config::default())
            .temporary()
            .metrics_registry(registry.clone())
            .start()
            .await
            .unwrap();
        let app = atest::init_service(
            App::new()
                .route(
                    "/mine",
                    actix_web::web::get().to(|| async { "the embedder's route" }),
                )
                .configure(t.configure()),
        )
        .await;

        let req = atest::TestRequest::post()
            .uri("/api/v1/namespaces/default/task-queues/mounted/activity/tasks")
            .set_json(json!({"task_type": "x", "task_id": "m-1"}))
            .to_request();
        let resp = atest::call_service(&app, req).await;
        assert_eq!(resp.status().as_u16(), 201);
        // The task added over HTTP is visible through the embedding API, and back.
        let info = t.status(&queue("mounted"), "m-1").await.unwrap();
        assert_eq!(info.state, TaskState::Pending);
        t.add(&queue("mounted"), TaskSpec::new("x").task_id("m-2"))
            .await
            .unwrap();
        let req = atest::TestRequest::get()
            .uri("/api/v1/namespaces/default/task-queues/mounted/activity/tasks/m-2")
            .to_request();
        let body: Value = atest::call_and_read_body_json(&app, req).await;
        assert_eq!(body["state"], json!("pending"));
        let req = atest::TestRequest::get().uri("/mine").to_request();
        assert!(atest::call_service(&app, req).await.status().is_success());

        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n == "tasq_tasks_added_total"),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n == "embedder_requests_total"),
            "{names:?}"
        );
        let req = atest::TestRequest::get().uri("/metrics").to_request();
        let text = String::from_utf8(atest::call_and_read_body(&app, req).await.to_vec()).unwrap();
        assert!(text.contains("tasq_tasks_added_total"), "{text}");
        assert!(text.contains("embedder_requests_total"), "{text}");

        // A second tasq on the same registry clashes: a clear error, not a panic.
        let e = Tasq::builder(Config::default())
            .temporary()
            .metrics_registry(registry)
            .start()
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        t.shutdown().await.unwrap();
    });
}

#[test]
fn a_data_dir_store_keeps_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.clone();
    actix_rt::System::new().block_on(async move {
        let t = Tasq::builder(Config::default())
            .data_dir(&d)
            .start()
            .await
            .unwrap();
        t.add(&queue("kept"), TaskSpec::new("x").task_id("k-1"))
            .await
            .unwrap();
        t.shutdown().await.unwrap();
    });
    assert!(data.is_dir(), "the store lives in the data dir");
    assert!(std::fs::read_dir(&data).unwrap().next().is_some());
}

#[test]
fn set_config_and_redrive() {
    with_tasq(|t| async move {
        let q = queue("embed-config");
        // Pause dispatch: a task waits in the backlog.
        let view = t.set_config(&q, Some(0.0), Some(3)).await.unwrap();
        assert_eq!(view.max_tasks_per_second, Some(0.0));
        assert_eq!(view.burst, Some(3));
        assert_eq!(view.source, "api");
        t.add(
            &q,
            TaskSpec::new("job").task_id("c-1").retry(RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            }),
        )
        .await
        .unwrap();
        let none = t
            .poll(&q, PollSpec::new("w").wait(Duration::ZERO))
            .await
            .unwrap();
        assert!(none.is_empty(), "paused queue dispatched {none:?}");
        // Out of range changes nothing.
        let e = t.set_config(&q, Some(-1.0), None).await.unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert_eq!(
            t.describe(&q)
                .await
                .unwrap()
                .rate_limit
                .max_tasks_per_second,
            Some(0.0)
        );
        // Remove the limit: the task goes out; fail it for good.
        let view = t.set_config(&q, None, None).await.unwrap();
        assert_eq!((view.max_tasks_per_second, view.source), (None, "none"));
        let got = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        let settled = t
            .fail(&got[0].lease, Failure::new("boom").non_retryable())
            .await
            .unwrap();
        assert_eq!(settled.state, TaskState::Failed);
        // Redrive: a bad id is refused, the dead letter comes back pending.
        let e = t
            .redrive(&q, Some(vec!["bad id".into()]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert_eq!(t.redrive(&q, None).await.unwrap(), 1);
        let again = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].task_id, "c-1");
        assert_eq!(again[0].attempt, 1, "attempts reset by the redrive");
    });
}

/// With `queue_threads = 0`, a queue actor runs on a thread offered with
/// `share_current_thread` (as each HTTP worker offers its own): it stops with that thread, and
/// the next call for its queue starts a new actor elsewhere, with nothing lost.
#[test]
fn queue_actors_run_on_shared_threads_and_outlive_them() {
    with_tasq(|t| async move {
        let worker = actix::Arbiter::new();
        let (offered, done) = tokio::sync::oneshot::channel();
        let t2 = t.clone();
        assert!(worker.spawn(async move {
            t2.share_current_thread();
            let _ = offered.send(());
        }));
        // The offer is in the registry's mailbox before the first request for the queue.
        done.await.unwrap();
        let q = queue("on-a-worker");
        let added = t
            .add(&q, TaskSpec::new("job").payload(json!({"n": 1})))
            .await
            .unwrap();
        let key = q.clone();
        assert!(t.is_loaded(&key), "the add started the queue's actor");

        worker.stop();
        assert!(worker.join().is_ok());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while t.is_loaded(&key) {
            assert!(
                std::time::Instant::now() < deadline,
                "the actor did not stop with the thread it ran on"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A new actor, on the registry's own threads, has the task.
        let tasks = t
            .poll(&q, PollSpec::new("w").wait(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].task_id, added.task_id);
        assert!(t.is_loaded(&key));
    });
}

#[test]
fn list_explain_and_settle_many_in_process() {
    use tasq::model::listing::{ListState, TaskFilter};
    use tasq::model::LeaseToken;
    use tasq::service::SettleOp;
    with_tasq(|t| async move {
        let q = queue("inspected");
        for id in ["a", "b", "c"] {
            t.add(&q, TaskSpec::new("t").task_id(id)).await.unwrap();
        }
        let page = t
            .list_tasks(&q, TaskFilter::default(), None, 2)
            .await
            .unwrap();
        let ids: Vec<&str> = page
            .tasks
            .iter()
            .map(|x| x.fields.task_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        let rest = t
            .list_tasks(
                &q,
                TaskFilter::default(),
                page.next_page_token.as_deref(),
                2,
            )
            .await
            .unwrap();
        assert_eq!(rest.tasks[0].fields.task_id, "c");
        let why = t.explain(&q, "c").await.unwrap();
        let codes: Vec<&str> = why.reasons.iter().map(|r| r.code).collect();
        assert_eq!(codes, ["no_poller", "waiting_behind"]);

        let tasks = t
            .poll(&q, PollSpec::new("w").max_tasks(3).wait(Duration::ZERO))
            .await
            .unwrap();
        let settles = tasks
            .iter()
            .map(|task| {
                let token = LeaseToken::decode(&task.lease).unwrap();
                let op = SettleOp::Complete {
                    result: tasq::model::null_json(),
                };
                (token, op)
            })
            .collect();
        let answers = t.settle_many(settles).await.unwrap();
        assert!(answers
            .iter()
            .all(|a| a.as_ref().unwrap().state == TaskState::Completed));
        let done = TaskFilter {
            state: ListState::Completed,
            ..TaskFilter::default()
        };
        let page = t.list_tasks(&q, done, None, 10).await.unwrap();
        assert_eq!(page.tasks.len(), 3);
    });
}
