//! The Watch service: many watches per stream, each first replaying history from its start
//! revision, then following committed events. A watcher that falls behind the in-memory fan-out
//! re-reads history, so every event is delivered exactly once, in revision order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::proto::{
    PbEvent, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService,
};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::EtcdError;
use super::store::{Store, key_in_range};

/// Events in one response at most (a long replay is split).
const MAX_EVENTS_PER_RESPONSE: usize = 1000;
/// etcd's answer to a progress request concerns the whole stream, not one watch.
const STREAM_WATCH_ID: i64 = -1;

pub struct WatchService {
    pub store: Arc<Store>,
    /// `--experimental-watch-progress-notify-interval`.
    pub progress_interval: Duration,
}

/// What one watch asked for.
#[derive(Debug, Clone)]
struct Spec {
    id: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: i64,
    progress_notify: bool,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl Spec {
    fn wants(&self, ev: &PbEvent) -> bool {
        let Some(kv) = &ev.kv else { return false };
        let is_delete = ev.r#type == 1;
        key_in_range(&kv.key, &self.key, &self.range_end)
            && !(is_delete && self.no_delete)
            && (is_delete || !self.no_put)
    }

    fn shape(&self, ev: &PbEvent) -> PbEvent {
        let mut ev = ev.clone();
        if !self.prev_kv {
            ev.prev_kv = None;
        }
        ev
    }
}

type Out = mpsc::Sender<Result<PbWatchResponse, Status>>;

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = ReceiverStream<Result<PbWatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(serve_stream(
            self.store.clone(),
            self.progress_interval,
            inbound,
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve_stream(
    store: Arc<Store>,
    progress_interval: Duration,
    mut inbound: Streaming<PbWatchRequest>,
    tx: Out,
) {
    // Each watch and the revision up to which it has sent every event.
    let mut watchers: HashMap<i64, (JoinHandle<()>, Arc<AtomicI64>)> = HashMap::new();
    let mut next_id: i64 = 0;
    while let Some(msg) = inbound.next().await {
        let req = match msg {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "watch stream ended");
                break;
            }
        };
        watchers.retain(|_, (h, _)| !h.is_finished());
        match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let id = if c.watch_id != 0 {
                    c.watch_id
                } else {
                    while watchers.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id
                };
                if watchers.contains_key(&id) {
                    let resp = PbWatchResponse {
                        header: Some(store.header()),
                        watch_id: id,
                        created: false,
                        canceled: true,
                        cancel_reason: "etcdserver: duplicate watch ID".into(),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                    continue;
                }
                let spec = Spec {
                    id,
                    key: c.key,
                    range_end: c.range_end,
                    start_revision: c.start_revision,
                    progress_notify: c.progress_notify,
                    no_put: c.filters.contains(&0),
                    no_delete: c.filters.contains(&1),
                    prev_kv: c.prev_kv,
                };
                // Subscribe before answering, so nothing committed after "created" is missed.
                let sub = store.subscribe();
                let created = PbWatchResponse {
                    header: Some(store.header()),
                    watch_id: id,
                    created: true,
                    ..Default::default()
                };
                if tx.send(Ok(created)).await.is_err() {
                    break;
                }
                let delivered = Arc::new(AtomicI64::new(0));
                let handle = tokio::spawn(run_watch(
                    store.clone(),
                    spec,
                    sub,
                    tx.clone(),
                    progress_interval,
                    delivered.clone(),
                ));
                watchers.insert(id, (handle, delivered));
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) => {
                if let Some((h, _)) = watchers.remove(&c.watch_id) {
                    h.abort();
                    let resp = PbWatchResponse {
                        header: Some(store.header()),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                // Only a revision every watch has delivered up to: a client may take it as
                // "my view is current as of this revision".
                let rev = watchers
                    .values()
                    .map(|(_, d)| d.load(Ordering::Acquire))
                    .fold(store.revision(), i64::min);
                let resp = PbWatchResponse {
                    header: Some(store.header_at(rev)),
                    watch_id: STREAM_WATCH_ID,
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
            None => {}
        }
    }
    for (h, _) in watchers.into_values() {
        h.abort();
    }
}

/// Sends `events` for `spec` in responses of bounded size; false once the client is gone.
async fn send_events(store: &Store, spec: &Spec, events: Vec<PbEvent>, tx: &Out) -> bool {
    for chunk in events.chunks(MAX_EVENTS_PER_RESPONSE) {
        let resp = PbWatchResponse {
            header: Some(store.header()),
            watch_id: spec.id,
            events: chunk.to_vec(),
            ..Default::default()
        };
        if tx.send(Ok(resp)).await.is_err() {
            return false;
        }
    }
    true
}

/// Replays history `from..=to` for `spec`. Err(()) ends the watch (compacted or gone).
async fn replay(store: &Arc<Store>, spec: &Spec, from: i64, to: i64, tx: &Out) -> Result<(), ()> {
    if from > to {
        return Ok(());
    }
    let s = store.clone();
    let (key, end, prev) = (spec.key.clone(), spec.range_end.clone(), spec.prev_kv);
    let history = tokio::task::spawn_blocking(move || s.history(&key, &end, from, to, prev)).await;
    match history {
        Ok(Ok(events)) => {
            let wanted: Vec<PbEvent> = events
                .iter()
                .filter(|e| spec.wants(e))
                .map(|e| spec.shape(e))
                .collect();
            if wanted.is_empty() || send_events(store, spec, wanted, tx).await {
                Ok(())
            } else {
                Err(())
            }
        }
        Ok(Err(EtcdError::Compacted)) => {
            let resp = PbWatchResponse {
                header: Some(store.header()),
                watch_id: spec.id,
                canceled: true,
                // etcd tells compaction by compact_revision alone, with no cancel reason.
                compact_revision: store.compacted(),
                ..Default::default()
            };
            let _ = tx.send(Ok(resp)).await;
            Err(())
        }
        Ok(Err(e)) => {
            let resp = PbWatchResponse {
                header: Some(store.header()),
                watch_id: spec.id,
                canceled: true,
                cancel_reason: e.to_string(),
                ..Default::default()
            };
            let _ = tx.send(Ok(resp)).await;
            Err(())
        }
        Err(_) => Err(()),
    }
}

async fn run_watch(
    store: Arc<Store>,
    spec: Spec,
    mut sub: broadcast::Receiver<super::store::EventBatch>,
    tx: Out,
    progress_interval: Duration,
    delivered: Arc<AtomicI64>,
) {
    let current = store.revision();
    let mut next = if spec.start_revision > 0 {
        spec.start_revision
    } else {
        current + 1
    };
    delivered.store(next - 1, Ordering::Release);
    if replay(&store, &spec, next, current, &tx).await.is_err() {
        return;
    }
    next = next.max(current + 1);
    delivered.store(next - 1, Ordering::Release);
    let mut progress = spec
        .progress_notify
        .then(|| tokio::time::interval(progress_interval));
    if let Some(p) = progress.as_mut() {
        p.tick().await;
    }
    let mut sent_since_tick = false;
    loop {
        tokio::select! {
            batch = sub.recv() => match batch {
                Ok(batch) => {
                    let wanted: Vec<PbEvent> = batch
                        .iter()
                        .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= next))
                        .filter(|e| spec.wants(e))
                        .map(|e| spec.shape(e))
                        .collect();
                    if let Some(last) = batch.last().and_then(|e| e.kv.as_ref()) {
                        next = next.max(last.mod_revision + 1);
                    }
                    if !wanted.is_empty() {
                        sent_since_tick = true;
                        if !send_events(&store, &spec, wanted, &tx).await {
                            return;
                        }
                    }
                    delivered.store(next - 1, Ordering::Release);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the fan-out: read what was missed from the store.
                    let upto = store.revision();
                    if replay(&store, &spec, next, upto, &tx).await.is_err() {
                        return;
                    }
                    next = next.max(upto + 1);
                    delivered.store(next - 1, Ordering::Release);
                    sent_since_tick = true;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = async {
                match progress.as_mut() {
                    Some(p) => {
                        p.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if !sent_since_tick {
                    // Every event up to next - 1 has been sent: that is the progress to report.
                    let resp = PbWatchResponse {
                        header: Some(store.header_at((next - 1).min(store.revision()))),
                        watch_id: spec.id,
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
                sent_since_tick = false;
            }
        }
    }
}
