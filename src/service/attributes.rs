//! Queue attributes that a protocol front end keeps (the SQS endpoint's queue attributes):
//! opaque JSON text to the service, stored with the queue and written through its actor, so
//! they are durable, ordered with the queue's other writes, and copied by `tasq store copy`.

use super::Tasq;
use crate::error::Result;
use crate::model::QueueKey;
use crate::queue::messages::SetAttributes;

impl Tasq {
    /// Stores (with `None` removes) the attributes of `queue`; answered once on disk.
    pub async fn set_queue_attributes(
        &self,
        queue: &QueueKey,
        attributes: Option<String>,
    ) -> Result<()> {
        self.serving_queues()?
            .call_durable(queue, SetAttributes { attributes }, self.store())
            .await
    }

    /// The attributes of `queue`, if any.
    pub fn queue_attributes(&self, queue: &QueueKey) -> Result<Option<String>> {
        self.serving_queues()?;
        self.store().attributes(queue)
    }

    /// The queues of `namespace` that have attributes, with them: `limit` after the queue
    /// named `after`, in name order.
    pub fn attributed_queues(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(QueueKey, String)>> {
        self.serving_queues()?;
        self.store().attributed_queues(namespace, after, limit)
    }
}
