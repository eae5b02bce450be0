//! The API server's view of its datastore: keys and revisions over the etcd v3 API, whether
//! the other end is mk8s's datastore or a real etcd. Knows nothing of Kubernetes objects
//! beyond bytes; the registry decides what goes in them.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, Txn, TxnOp, WatchOptions,
};

/// Largest etcd response read (a page of lists, a batch of watch events); upstream allows 2 GiB.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// etcd's text for a compacted revision, which the registry turns into 410 Gone.
const COMPACTED: &str = "required revision has been compacted";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the key already exists")]
    Exists,
    #[error("the key does not exist")]
    NotFound,
    #[error("the key was modified (now at revision {0})")]
    Conflict(i64),
    /// The revision asked for is older than the compacted history.
    #[error("too old resource version: {0}")]
    Compacted(i64),
    #[error("cannot read {}: {cause}", path.display())]
    Credentials {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("etcd: {0}")]
    Etcd(String),
}

impl From<etcd_client::Error> for StorageError {
    fn from(e: etcd_client::Error) -> Self {
        let text = e.to_string();
        if text.contains(COMPACTED) {
            StorageError::Compacted(0)
        } else {
            StorageError::Etcd(text)
        }
    }
}

/// How to reach the datastore (`--etcd-servers`, `--etcd-cafile`, …).
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub servers: Vec<String>,
    pub cafile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
}

/// One stored value with its revisions.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// A page of a range read.
pub struct Page {
    pub items: Vec<Stored>,
    /// The store's revision the page was read at.
    pub revision: i64,
    /// Keys in range after this page.
    pub remaining: i64,
}

/// A change seen by a watch.
pub enum Change {
    Put {
        current: Stored,
        previous: Option<Stored>,
    },
    Delete {
        previous: Option<Stored>,
        revision: i64,
    },
    /// Nothing changed up to this revision (progress).
    Progress(i64),
}

#[derive(Clone)]
pub struct Storage {
    client: Client,
}

fn stored(kv: &etcd_client::KeyValue) -> Stored {
    Stored {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}

/// The first key after every key with this prefix.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Storage {
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StorageError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|cause| StorageError::Credentials {
                path: p.clone(),
                cause,
            })
        };
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if config.servers.iter().any(|s| s.starts_with("https://")) {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.cafile {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&config.certfile, &config.keyfile) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(config.servers.clone(), Some(opts)).await?;
        Ok(Self { client })
    }

    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Stored>, StorageError> {
        let resp = self.kv().get(key, None).await?;
        Ok(resp.kvs().first().map(stored))
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64, StorageError> {
        let resp = self
            .kv()
            .get(
                "/registry/health",
                Some(GetOptions::new().with_count_only()),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Keys from `start` (inclusive) to the end of `prefix`, at most `limit` (0 = all), at
    /// `revision` (0 = latest).
    pub async fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: i64,
        revision: i64,
    ) -> Result<Page, StorageError> {
        let mut opts = GetOptions::new().with_range(prefix_end(prefix));
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let from = if start.is_empty() { prefix } else { start };
        let resp =
            self.kv()
                .get(from, Some(opts))
                .await
                .map_err(|e| match StorageError::from(e) {
                    StorageError::Compacted(_) => StorageError::Compacted(revision),
                    other => other,
                })?;
        let items: Vec<Stored> = resp.kvs().iter().map(stored).collect();
        let remaining = if resp.more() {
            (resp.count() - items.len() as i64).max(1)
        } else {
            0
        };
        Ok(Page {
            revision: resp.header().map(|h| h.revision()).unwrap_or(0),
            items,
            remaining,
        })
    }

    /// Creates `key`; fails with `Exists` if it is there. Returns the new revision.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StorageError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.kv().txn(txn).await?;
        if !resp.succeeded() {
            return Err(StorageError::Exists);
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Replaces `key` if it is still at `expected` (its mod revision). Returns the new revision.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<i64, StorageError> {
        self.guarded(key, expected, TxnOp::put(key, value, None))
            .await
    }

    /// Deletes `key` if it is still at `expected`. Returns the revision of the delete.
    pub async fn delete(&self, key: &str, expected: i64) -> Result<i64, StorageError> {
        self.guarded(key, expected, TxnOp::delete(key, None)).await
    }

    /// Runs `op` if `key` is still at revision `expected`; else says what it is now.
    async fn guarded(&self, key: &str, expected: i64, op: TxnOp) -> Result<i64, StorageError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.kv().txn(txn).await?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or(0));
        }
        Err(match current_after_failed(&resp) {
            Some(rev) => StorageError::Conflict(rev),
            None => StorageError::NotFound,
        })
    }

    /// Changes under `prefix` (or of exactly `key` when `exact`) after `after`.
    pub async fn watch(
        &self,
        key: &str,
        exact: bool,
        after: i64,
    ) -> Result<WatchStream, StorageError> {
        let mut opts = WatchOptions::new()
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(after + 1);
        if !exact {
            opts = opts.with_range(prefix_end(key));
        }
        let stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .watch(key, Some(opts))
            .await?;
        Ok(WatchStream {
            inner: stream,
            after,
            pending: std::collections::VecDeque::new(),
        })
    }
}

fn current_after_failed(resp: &etcd_client::TxnResponse) -> Option<i64> {
    resp.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
        _ => None,
    })
}

/// One etcd watch, yielding changes in revision order.
pub struct WatchStream {
    inner: etcd_client::WatchStream,
    after: i64,
    pending: std::collections::VecDeque<Change>,
}

impl WatchStream {
    /// Waits for the datastore to confirm the watch, so a compacted start revision is an
    /// error here rather than later.
    pub async fn created(&mut self) -> Result<(), StorageError> {
        let Some(resp) = self.inner.message().await? else {
            return Err(StorageError::Etcd("the watch stream closed at once".into()));
        };
        self.take(resp)
    }

    /// The next change; `None` when the datastore ended the stream.
    pub async fn next(&mut self) -> Result<Option<Change>, StorageError> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(Some(c));
            }
            let Some(resp) = self.inner.message().await? else {
                return Ok(None);
            };
            let progress = resp.events().is_empty() && !resp.created();
            let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            self.take(resp)?;
            if progress && self.pending.is_empty() && header_rev > self.after {
                return Ok(Some(Change::Progress(header_rev)));
            }
        }
    }

    /// Queues a response's changes; compaction and cancellation are errors.
    fn take(&mut self, resp: etcd_client::WatchResponse) -> Result<(), StorageError> {
        if resp.compact_revision() > 0 {
            return Err(StorageError::Compacted(resp.compact_revision()));
        }
        if resp.canceled() {
            return Err(StorageError::Etcd(format!(
                "watch canceled: {}",
                resp.cancel_reason()
            )));
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let previous = ev.prev_kv().map(stored);
            self.after = kv.mod_revision();
            self.pending.push_back(match ev.event_type() {
                etcd_client::EventType::Put => Change::Put {
                    current: stored(kv),
                    previous,
                },
                etcd_client::EventType::Delete => Change::Delete {
                    previous: previous.map(|mut p| {
                        p.key = String::from_utf8_lossy(kv.key()).into_owned();
                        p
                    }),
                    revision: kv.mod_revision(),
                },
            });
        }
        Ok(())
    }
}
