//! One etcd watch per resource, fanned out in memory to every API watch of that resource
//! (design §6). A feed keeps its latest changes, so a watch from a recent resourceVersion
//! starts without a new etcd watch; a watch from a revision the feed no longer holds gets an
//! etcd watch of its own (which also reports a compacted revision, for 410 Expired).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::storage::{Change, Storage, StorageError, WatchStream};

/// Changes a feed keeps for watches that start a little in the past, and their bytes at most.
const RECENT: usize = 1024;
const RECENT_BYTES: usize = 32 * 1024 * 1024;
/// Changes a slow watcher may fall behind before its watch is ended (the client re-watches).
const CHANNEL: usize = 4096;

/// The feeds, by resource key prefix.
#[derive(Default)]
pub struct Hub {
    feeds: tokio::sync::Mutex<HashMap<String, Arc<Feed>>>,
}

/// What a feed broadcasts: a change, or how it ended.
pub enum Note {
    Change(Arc<Change>),
    /// The etcd watch reported this compacted revision (the watchers answer 410).
    Compacted(i64),
}

struct Feed {
    tx: broadcast::Sender<Arc<Note>>,
    state: Mutex<FeedState>,
}

struct FeedState {
    /// The feed holds every change after this revision.
    from: i64,
    recent: VecDeque<(i64, Arc<Change>)>,
    recent_bytes: usize,
    dead: bool,
}

/// The bytes a kept change holds.
fn size(c: &Change) -> usize {
    match c {
        Change::Put { current, previous } => {
            current.value.len() + previous.as_ref().map_or(0, |p| p.value.len())
        }
        Change::Delete { previous, .. } => previous.as_ref().map_or(0, |p| p.value.len()),
        Change::Progress(_) => 0,
    }
}

/// The revision a change happened at.
pub fn revision(c: &Change) -> i64 {
    match c {
        Change::Put { current, .. } => current.mod_revision,
        Change::Delete { revision, .. } => *revision,
        Change::Progress(r) => *r,
    }
}

/// The changes one API watch receives, in revision order.
pub enum Subscription {
    Own(Box<WatchStream>),
    Feed {
        backlog: VecDeque<Arc<Change>>,
        rx: broadcast::Receiver<Arc<Note>>,
        /// Revision of the last change handed out (later duplicates are skipped).
        last: i64,
    },
}

impl Subscription {
    /// The next change; `None` when the feed or the etcd watch ended.
    pub async fn next(&mut self) -> Result<Option<Arc<Change>>, StorageError> {
        match self {
            Subscription::Own(w) => Ok(w.next().await?.map(Arc::new)),
            Subscription::Feed { backlog, rx, last } => {
                if let Some(c) = backlog.pop_front() {
                    *last = (*last).max(revision(&c));
                    return Ok(Some(c));
                }
                loop {
                    match rx.recv().await {
                        Ok(note) => {
                            let c = match &*note {
                                Note::Change(c) => c.clone(),
                                Note::Compacted(r) => return Err(StorageError::Compacted(*r)),
                            };
                            let r = revision(&c);
                            if r <= *last && !matches!(*c, Change::Progress(_)) {
                                continue;
                            }
                            *last = (*last).max(r);
                            return Ok(Some(c));
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(None),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            return Err(StorageError::Etcd(format!(
                                "the watcher fell {n} changes behind"
                            )));
                        }
                    }
                }
            }
        }
    }
}

impl Feed {
    /// A subscription from `after`, if this feed holds every change since then.
    fn subscribe(&self, after: i64) -> Option<Subscription> {
        let st = self.state.lock();
        if st.dead || after < st.from {
            return None;
        }
        // Subscribing under the lock the pump holds while publishing: no change falls
        // between the backlog and the receiver.
        let rx = self.tx.subscribe();
        let backlog = st
            .recent
            .iter()
            .filter(|(r, _)| *r > after)
            .map(|(_, c)| c.clone())
            .collect();
        Some(Subscription::Feed {
            backlog,
            rx,
            last: after,
        })
    }

    fn publish(&self, c: Change) {
        let c = Arc::new(c);
        let mut st = self.state.lock();
        if !matches!(*c, Change::Progress(_)) {
            st.recent_bytes += size(&c);
            st.recent.push_back((revision(&c), c.clone()));
            while st.recent.len() > RECENT || st.recent_bytes > RECENT_BYTES {
                let Some((r, old)) = st.recent.pop_front() else {
                    break;
                };
                st.recent_bytes = st.recent_bytes.saturating_sub(size(&old));
                st.from = r;
            }
        }
        // No receivers is fine: the feed keeps running for the next watch.
        let _ = self.tx.send(Arc::new(Note::Change(c)));
    }
}

impl Hub {
    /// Changes under `prefix` after revision `after`.
    pub async fn subscribe(
        self: &Arc<Self>,
        storage: &Storage,
        prefix: &str,
        after: i64,
    ) -> Result<Subscription, StorageError> {
        let mut feeds = self.feeds.lock().await;
        if let Some(feed) = feeds.get(prefix) {
            if let Some(sub) = feed.subscribe(after) {
                return Ok(sub);
            }
            if !feed.state.lock().dead {
                // Older than the feed holds: an etcd watch of its own.
                drop(feeds);
                let mut own = storage.watch(prefix, false, after).await?;
                own.created().await?;
                return Ok(Subscription::Own(Box::new(own)));
            }
        }
        let mut stream = storage.watch(prefix, false, after).await?;
        stream.created().await?;
        let (tx, _) = broadcast::channel(CHANNEL);
        let feed = Arc::new(Feed {
            tx,
            state: Mutex::new(FeedState {
                from: after,
                recent: VecDeque::new(),
                recent_bytes: 0,
                dead: false,
            }),
        });
        let sub = feed.subscribe(after).ok_or_else(|| {
            StorageError::Etcd("a new watch feed refused its first watcher".into())
        })?;
        feeds.insert(prefix.to_string(), feed.clone());
        drop(feeds);
        tokio::spawn(pump(self.clone(), prefix.to_string(), feed, stream));
        Ok(sub)
    }
}

/// Moves a feed's etcd watch into memory until it ends; then the feed is retired (its
/// watchers end and re-watch, which starts a new feed).
async fn pump(hub: Arc<Hub>, prefix: String, feed: Arc<Feed>, mut stream: WatchStream) {
    loop {
        match stream.next().await {
            Ok(Some(c)) => feed.publish(c),
            Ok(None) => break,
            Err(StorageError::Compacted(r)) => {
                feed.state.lock().dead = true;
                let _ = feed.tx.send(Arc::new(Note::Compacted(r)));
                break;
            }
            Err(e) => {
                tracing::info!("watch feed of {prefix} ended: {e}");
                break;
            }
        }
    }
    feed.state.lock().dead = true;
    let mut feeds = hub.feeds.lock().await;
    if feeds.get(&prefix).is_some_and(|f| Arc::ptr_eq(f, &feed)) {
        feeds.remove(&prefix);
    }
}
