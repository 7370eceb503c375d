//! Tasks: add, add many, status, wait for the end, cancel.

use std::sync::Arc;
use std::time::Duration;

use super::Tasq;
use crate::error::{Error, Result};
use crate::model::listing::TaskDetail;
use crate::model::{check_batch_len, validate_name, QueueKey, TaskInfo, TaskRecord, TaskSpec};
use crate::queue::messages::{AddResult, Cancel, Watch, WatchTask};

impl Tasq {
    /// Adds one task, answered once it is on disk (with `durability = "fsync"`). A `task_id`
    /// that exists already in the queue changes nothing and answers `duplicate: true`.
    pub async fn add(&self, queue: &QueueKey, task: TaskSpec) -> Result<AddResult> {
        let task = task.validate()?;
        self.serving_queues()?
            .add_one(queue, task, self.store())
            .await
    }

    /// Adds 1–1000 tasks, all or nothing: one invalid task rejects the batch (the error names
    /// its index). Results come in order.
    pub async fn add_batch(
        &self,
        queue: &QueueKey,
        tasks: impl IntoIterator<Item = TaskSpec>,
    ) -> Result<Vec<AddResult>> {
        let tasks: Vec<TaskSpec> = tasks.into_iter().collect();
        check_batch_len(tasks.len())?;
        let tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.validate()
                    .map_err(|e| Error::invalid(format!("tasks[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.serving_queues()?
            .add(queue, Arc::new(tasks), self.store())
            .await
    }

    /// The status of a task; an unknown id is [`Error::NotFound`].
    pub async fn status(&self, queue: &QueueKey, task_id: &str) -> Result<TaskInfo> {
        self.serving_queues()?;
        validate_name("task_id", task_id)?;
        self.read_status(queue, task_id)
    }

    /// Like [`Tasq::status`], but first waits until the task is in a terminal state
    /// (completed, failed, timed out, cancelled) or `timeout` passes.
    pub async fn wait(
        &self,
        queue: &QueueKey,
        task_id: &str,
        timeout: Duration,
    ) -> Result<TaskInfo> {
        let queues = self.serving_queues()?;
        validate_name("task_id", task_id)?;
        let watch = WatchTask {
            task_id: task_id.to_string(),
        };
        match queues.call(queue, watch).await?? {
            Watch::Now(rec) => return status_of(queue, task_id, rec.map(|r| *r)),
            Watch::Later(rx) => {
                let _ = tokio::time::timeout(timeout, rx).await;
            }
        }
        self.read_status(queue, task_id)
    }

    /// Everything known of a task: payload, headers, policy, result and errors; an unknown
    /// id is [`Error::NotFound`].
    pub async fn task_detail(&self, queue: &QueueKey, task_id: &str) -> Result<TaskDetail> {
        self.serving_queues()?;
        validate_name("task_id", task_id)?;
        match self.store().task(queue, task_id)? {
            Some(rec) => Ok(TaskDetail::from(rec)),
            None => Err(no_task(queue, task_id)),
        }
    }

    fn read_status(&self, queue: &QueueKey, task_id: &str) -> Result<TaskInfo> {
        status_of(queue, task_id, self.store().task(queue, task_id)?)
    }

    /// Cancels a task: a pending one becomes `cancelled` and is never dispatched; a running
    /// one is marked, so its next heartbeat answers `cancel_requested: true`.
    pub async fn cancel(&self, queue: &QueueKey, task_id: &str) -> Result<TaskInfo> {
        let queues = self.serving_queues()?;
        validate_name("task_id", task_id)?;
        let cancel = Cancel {
            task_id: task_id.to_string(),
        };
        let rec = queues.call_durable(queue, cancel, self.store()).await?;
        Ok(TaskInfo::from(&rec))
    }
}

fn status_of(queue: &QueueKey, task_id: &str, rec: Option<TaskRecord>) -> Result<TaskInfo> {
    match rec {
        Some(rec) => Ok(TaskInfo::from(&rec)),
        None => Err(no_task(queue, task_id)),
    }
}

fn no_task(queue: &QueueKey, task_id: &str) -> Error {
    Error::NotFound(format!("no task {task_id:?} in {queue}"))
}
