//! Watch: a chunked stream of `WatchEvent`s (one JSON object a line) over an etcd watch of
//! the collection's prefix, with selector transitions (an object leaving a selector is
//! DELETED for that watcher), initial ADDED events, bookmarks, Table rows and 410 Expired.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::registry::{ApiResult, Selectors, Target, decode_as, read_list, to_table};
use super::resources::Resource;
use super::server::{Req, State};
use super::status::ApiError;
use super::storage::{Change, StorageError};

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// Renders events for one watcher: plain objects or one-row Tables.
struct Encoder {
    res: &'static Resource,
    table: Option<Req>,
    first: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: Value) -> Bytes {
        let obj = match &self.table {
            Some(req) if kind != "BOOKMARK" && kind != "ERROR" => {
                let mut t = to_table(self.res, &[obj], req, json!({}));
                if !self.first {
                    t["columnDefinitions"] = json!([]);
                }
                self.first = false;
                t
            }
            _ => obj,
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&mut self, rv: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.event(
            "BOOKMARK",
            json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta}),
        )
    }
}

fn expired(rv: i64, oldest: i64) -> Value {
    let message = if oldest > 0 {
        format!("too old resource version: {rv} ({oldest})")
    } else {
        format!("too old resource version: {rv}")
    };
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": "Expired", "code": 410})
}

pub async fn watch(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let mut sel = Selectors::from_req(req, t.res)?;
    if let Some(name) = &t.name {
        sel.fields = super::selector::FieldSelector::parse(&format!("metadata.name={name}"))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let bookmarks = req.flag("allowWatchBookmarks")?;
    let send_initial = req.flag("sendInitialEvents")?;
    let rv: i64 = match req.param("resourceVersion") {
        None | Some("") => 0,
        Some(s) => s
            .parse()
            .ok()
            .filter(|r: &i64| *r >= 0)
            .ok_or_else(|| ApiError::BadRequest(format!("invalid resource version: {s:?}")))?,
    };
    if rv > 0 {
        let current = state
            .storage
            .revision()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if rv > current {
            return Err(ApiError::Timeout(format!(
                "Too large resource version: {rv}, current: {current}"
            )));
        }
    }
    let timeout = match req.param("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        // Upstream closes idle watches after a random 30–60 minutes.
        None => Duration::from_secs(rand::random_range(1800..3600)),
    };
    let mut enc = Encoder {
        res: t.res,
        table: req.wants_table().then(|| Req {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: Bytes::new(),
            user: req.user.clone(),
            warnings: Default::default(),
            upgrade: None,
        }),
        first: true,
    };

    // Unset or "0": start with the current state as ADDED events, then changes after it.
    let mut initial = Vec::new();
    let start = if rv == 0 || send_initial {
        let list_req = Req {
            method: req.method.clone(),
            path: req.path.clone(),
            query: Vec::new(),
            headers: hyper::HeaderMap::new(),
            body: Bytes::new(),
            user: req.user.clone(),
            warnings: Default::default(),
            upgrade: None,
        };
        let target = Target {
            res: t.res,
            namespace: t.namespace.clone(),
            name: None,
            sub: None,
        };
        let (items, revision, _, _) = read_list(state, &list_req, &target, &sel).await?;
        initial = items;
        revision
    } else {
        rv
    };

    // The feed covers the whole resource; this watch keeps the keys of its namespace.
    let prefix = super::registry::prefix(t.res, t.namespace.as_deref().unwrap_or(""));
    let feed_prefix = super::registry::prefix(t.res, "");
    let stream = match state
        .watches
        .subscribe(&state.storage, &feed_prefix, start)
        .await
    {
        Ok(s) => Ok(s),
        Err(StorageError::Compacted(oldest)) => Err(oldest),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let res = t.res;
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        // Initial events wait for the client like any other (never dropped).
        for obj in initial {
            if tx.send(enc.event("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks && tx.send(enc.bookmark(start, true)).await.is_err() {
            return;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(oldest) => {
                let _ = tx.send(enc.event("ERROR", expired(rv, oldest))).await;
                return;
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        let mut last_rv = start;
        loop {
            let out = tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => break,
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    if bookmarks { vec![enc.bookmark(last_rv, false)] } else { vec![] }
                }
                next = stream.next() => match next {
                    Ok(Some(change)) => {
                        let (events, rv) = if in_prefix(&change, &prefix) {
                            translate(res, &sel, &change)
                        } else {
                            (vec![], super::feed::revision(&change))
                        };
                        last_rv = last_rv.max(rv);
                        events.into_iter().map(|(k, o)| enc.event(k, o)).collect()
                    }
                    Ok(None) => break,
                    Err(StorageError::Compacted(oldest)) => {
                        let _ = tx.send(enc.event("ERROR", expired(last_rv, oldest))).await;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("watch of {} ended: {e}", res.plural);
                        break;
                    }
                },
            };
            for b in out {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
        }
    });
    let body = StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    let mut resp = Response::new(BodyExt::boxed(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// The events one change means for a watcher with these selectors, and its revision.
/// Whether a change is to a key under `prefix` (progress notes always are).
fn in_prefix(change: &Change, prefix: &str) -> bool {
    match change {
        Change::Put { current, .. } => current.key.starts_with(prefix),
        Change::Delete { previous, .. } => {
            previous.as_ref().is_some_and(|p| p.key.starts_with(prefix))
        }
        Change::Progress(_) => true,
    }
}

fn translate(
    res: &Resource,
    sel: &Selectors,
    change: &Change,
) -> (Vec<(&'static str, Value)>, i64) {
    let decode = |s: &super::storage::Stored| decode_as(res, s).ok();
    match change {
        Change::Progress(rv) => (vec![], *rv),
        Change::Put { current, previous } => {
            let rv = current.mod_revision;
            let Some(now) = decode(current) else {
                return (vec![], rv);
            };
            let was = previous
                .as_ref()
                .and_then(decode)
                .is_some_and(|p| sel.matches(res, &p));
            let is = sel.matches(res, &now);
            let ev = match (was, is) {
                (false, true) => vec![("ADDED", now)],
                (true, true) => vec![("MODIFIED", now)],
                (true, false) => vec![("DELETED", now)],
                (false, false) => vec![],
            };
            (ev, rv)
        }
        Change::Delete { previous, revision } => {
            let revision = *revision;
            let Some(mut prev) = previous.as_ref().and_then(decode) else {
                return (vec![], revision);
            };
            if !sel.matches(res, &prev) {
                return (vec![], revision);
            }
            super::registry::meta_mut(&mut prev)
                .insert("resourceVersion".into(), revision.to_string().into());
            (vec![("DELETED", prev)], revision)
        }
    }
}
