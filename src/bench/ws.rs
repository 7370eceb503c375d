//! The streaming worker of `--transport ws`: one WebSocket on `GET {q}/connect` (frames as in
//! the API contract's "Streaming workers"), `--credit` tasks out at once, each task completed
//! at once with a `complete` frame and counted when the server's `settled` frame comes back
//! (that is, once the complete is durable).
//!
//! Frames are read by one loop and written by a writer task that batches whatever is queued
//! into one flush, so a burst of completes costs one write.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::http::Target;
use super::workers::{histogram, Shared};
use super::{BenchError, BenchResult};

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow, default)]
    task: Option<FrameTask<'a>>,
    #[serde(borrow, default)]
    state: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FrameTask<'a> {
    #[serde(borrow)]
    lease: Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// Runs one streaming worker on `path_and_query` (`{q}/connect?identity=…`) until the run is
/// done; returns its receipt-latency histogram.
pub async fn ws_worker(
    target: Arc<Target>,
    path_and_query: String,
    credit: u32,
    shared: Arc<Shared>,
) -> BenchResult<Histogram<u64>> {
    let url = format!("ws://{}{}", target.authority, path_and_query);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| BenchError::new(format!("{url}: {e}")))?;
    if let Some(auth) = &target.auth {
        let value = auth
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| BenchError::new("--api-key is not a valid header value"))?;
        req.headers_mut().insert("authorization", value);
    }
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .map_err(|e| BenchError::new(format!("WebSocket {url}: {e}")))?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            sink.feed(m).await?;
            while let Ok(m) = rx.try_recv() {
                sink.feed(m).await?;
            }
            sink.flush().await?;
        }
        let _ = sink.close().await;
        Ok::<(), tokio_tungstenite::tungstenite::Error>(())
    });
    let send = |m: String| {
        tx.send(Message::text(m))
            .map_err(|_| BenchError::new("WebSocket writer stopped"))
    };
    send(format!(r#"{{"op":"credit","n":{credit}}}"#))?;

    let mut hist = histogram();
    let mut done = shared.done();
    let result = loop {
        if shared.is_done() {
            break Ok(());
        }
        let msg = tokio::select! {
            biased;
            _ = done.wait_for(|d| *d) => break Ok(()),
            m = stream.next() => m,
        };
        let text = match msg {
            None => break Err(BenchError::new("the server closed the WebSocket")),
            Some(Err(e)) => break Err(BenchError::new(format!("WebSocket: {e}"))),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                break Err(BenchError::new(format!(
                    "the server closed the WebSocket: {c:?}"
                )))
            }
            Some(Ok(_)) => continue,
        };
        let frame: Frame<'_> = match serde_json::from_str(text.as_str()) {
            Ok(f) => f,
            Err(e) => break Err(BenchError::new(format!("bad frame {text}: {e}"))),
        };
        match (frame.op.as_ref(), frame.task) {
            ("task", Some(task)) => {
                let now = shared.now_ns();
                shared.on_received(&mut hist, task.payload.get(), now);
                send(format!(
                    r#"{{"op":"complete","lease":"{}","result":null}}"#,
                    task.lease
                ))?;
            }
            ("settled", _) => {
                if frame.state.as_deref() == Some("completed") {
                    shared.on_completed();
                } else {
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            ("error", _) => {
                let err = frame.error.map(RawValue::get).unwrap_or("");
                if err.contains("\"lease_lost\"") {
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                } else {
                    break Err(BenchError::new(format!("error frame: {err}")));
                }
            }
            _ => {}
        }
    };
    drop(tx);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), writer).await;
    result.map(|()| hist)
}
