//! The MVCC store: etcd's data model on redb.
//!
//! One global revision. Every write of a key is a record in the `revs` table under its
//! (revision, sub-revision); deletes are tombstone records. An in-memory index (key → its
//! revisions, with create revision, version and lease) is rebuilt from that table at start,
//! so reads at any uncompacted revision touch disk only for values. All writes go through one
//! writer thread that takes every queued request into one redb transaction committed with
//! `Durability::Immediate` (group commit: concurrent writers share one fsync); a request is
//! acknowledged only after that commit. Readers see only committed revisions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbDeleteResponse, PbEvent, PbKeyValue, PbPutRequest, PbPutResponse,
    PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp, PbTargetUnion, PbTxnOpRequest,
    PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};
use parking_lot::{Mutex, RwLock};
use prost::Message;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::error::EtcdError;

const REVS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("revs");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_CLUSTER_ID: &str = "cluster_id";
const META_MEMBER_ID: &str = "member_id";
const META_TERM: &str = "term";

/// etcd's `--max-request-bytes` default.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's `--max-txn-ops` default.
pub const MAX_TXN_OPS: usize = 128;
/// etcd's largest lease TTL (seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's smallest lease TTL with default election settings (1.5 s, rounded up).
pub const MIN_LEASE_TTL: i64 = 2;
/// redb's page cache.
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Requests taken into one group commit at most.
const MAX_BATCH: usize = 1024;
/// Batches of events a slow watcher may fall behind before it re-reads history.
const EVENT_BACKLOG: usize = 256;

const TOMBSTONE: u8 = 1;
const LIVE: u8 = 0;

/// One revision of one key, as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RevEntry {
    main: i64,
    sub: u32,
    tombstone: bool,
    create: i64,
    version: i64,
    lease: i64,
}

/// A key's revisions, oldest first. Most keys have one after compaction, kept inline so a
/// key costs no allocation beyond its name.
#[derive(Debug, Default)]
struct KeyIndex {
    revs: smallvec::SmallVec<[RevEntry; 1]>,
}

impl KeyIndex {
    /// The live entry at `rev`, if the key exists then.
    fn at(&self, rev: i64) -> Option<&RevEntry> {
        let i = self.revs.partition_point(|e| e.main <= rev);
        self.revs[..i].last().filter(|e| !e.tombstone)
    }
}

#[derive(Debug, Default)]
struct Index {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
    compacted: i64,
}

impl Index {
    /// Keys of `[key, range_end)` (etcd's conventions for empty and `\0` ends) with their
    /// entry at `rev`, in key order.
    fn range_at(&self, key: &[u8], range_end: &[u8], rev: i64) -> Vec<(&Vec<u8>, RevEntry)> {
        let mut out = Vec::new();
        if range_end.is_empty() {
            if let Some((k, ki)) = self.keys.get_key_value(key)
                && let Some(e) = ki.at(rev)
            {
                out.push((k, *e));
            }
            return out;
        }
        let upper = if range_end == [0] {
            Bound::Unbounded
        } else {
            if range_end <= key {
                return out;
            }
            Bound::Excluded(range_end.to_vec())
        };
        for (k, ki) in self.keys.range((Bound::Included(key.to_vec()), upper)) {
            if let Some(e) = ki.at(rev) {
                out.push((k, *e));
            }
        }
        out
    }

    fn push(&mut self, key: &[u8], e: RevEntry) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.revs.push(e),
            None => {
                self.keys.insert(
                    key.to_vec(),
                    KeyIndex {
                        revs: smallvec::smallvec![e],
                    },
                );
            }
        }
    }
}

/// A lease and the keys attached to it.
#[derive(Debug)]
pub struct LeaseEntry {
    pub ttl: i64,
    pub expiry: Instant,
    pub keys: BTreeSet<Vec<u8>>,
}

/// A write request for the writer thread.
#[derive(Debug)]
pub enum WriteOp {
    Put(PbPutRequest),
    Delete(PbDeleteRequest),
    Txn(PbTxnRequest),
    Compact(i64),
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke(i64),
    /// Revokes the lease only if it is still past its expiry (a keep-alive may have won).
    LeaseExpire(i64),
}

/// What a write produced.
#[derive(Debug)]
pub enum WriteResult {
    Put(PbPutResponse),
    Delete(PbDeleteResponse),
    Txn(PbTxnResponse),
    Compacted(PbResponseHeader),
    LeaseGranted {
        header: PbResponseHeader,
        id: i64,
        ttl: i64,
    },
    LeaseRevoked(PbResponseHeader),
}

struct WriteReq {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteResult, EtcdError>>,
}

/// The committed events of one group commit, in revision order.
pub type EventBatch = Arc<Vec<PbEvent>>;

/// The store: index, database, writer and event fan-out.
pub struct Store {
    db: RwLock<Database>,
    path: PathBuf,
    index: RwLock<Index>,
    committed: AtomicI64,
    pub leases: Mutex<HashMap<i64, LeaseEntry>>,
    writer: mpsc::Sender<WriteReq>,
    events: broadcast::Sender<EventBatch>,
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

fn encode(tombstone: bool, kv: &PbKeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + kv.encoded_len());
    buf.push(if tombstone { TOMBSTONE } else { LIVE });
    // Encoding into a Vec cannot run out of space.
    let _ = kv.encode(&mut buf);
    buf
}

fn decode(bytes: &[u8]) -> Result<(bool, PbKeyValue), EtcdError> {
    let (flag, rest) = bytes
        .split_first()
        .ok_or_else(|| EtcdError::Storage("empty record".into()))?;
    Ok((*flag == TOMBSTONE, PbKeyValue::decode(rest)?))
}

fn load_kv<T: ReadableTable<(u64, u32), &'static [u8]>>(
    table: &T,
    e: &RevEntry,
) -> Result<PbKeyValue, EtcdError> {
    let rec = table
        .get((e.main as u64, e.sub))?
        .ok_or_else(|| EtcdError::Storage(format!("revision {}.{} is missing", e.main, e.sub)))?;
    Ok(decode(rec.value())?.1)
}

impl Store {
    /// Opens (or creates) the store in `dir`, rebuilds the index, starts the writer thread.
    pub fn open(dir: &Path) -> Result<Arc<Store>, EtcdError> {
        std::fs::create_dir_all(dir).map_err(|e| EtcdError::Storage(e.to_string()))?;
        let path = dir.join("mk8s.redb");
        // redb caches up to 1 GiB by default; the OS page cache already holds hot pages, so a
        // small cache keeps the datastore's memory a fraction of etcd's.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| EtcdError::Storage(e.to_string()))?;

        let mut index = Index::default();
        let mut leases = HashMap::new();
        let (revision, cluster_id, member_id, raft_term);
        {
            let mut w = db.begin_write()?;
            w.set_durability(Durability::Immediate)?;
            {
                let mut meta = w.open_table(META)?;
                let get = |m: &redb::Table<&str, i64>, k: &str| -> Result<Option<i64>, EtcdError> {
                    Ok(m.get(k)?.map(|v| v.value()))
                };
                let cid = match get(&meta, META_CLUSTER_ID)? {
                    Some(v) => v,
                    None => (rand_id() >> 1) as i64,
                };
                let mid = match get(&meta, META_MEMBER_ID)? {
                    Some(v) => v,
                    None => (rand_id() >> 1) as i64,
                };
                // Each start is a new term, as a restarted single-member raft elects itself.
                let term = get(&meta, META_TERM)?.unwrap_or(0) + 1;
                meta.insert(META_CLUSTER_ID, cid)?;
                meta.insert(META_MEMBER_ID, mid)?;
                meta.insert(META_TERM, term)?;
                revision = get(&meta, META_REVISION)?.unwrap_or(1).max(1);
                index.compacted = get(&meta, META_COMPACTED)?.unwrap_or(0);
                cluster_id = cid as u64;
                member_id = mid as u64;
                raft_term = term as u64;

                let revs = w.open_table(REVS)?;
                for row in revs.iter()? {
                    let (k, v) = row?;
                    let (main, sub) = k.value();
                    let (tombstone, kv) = decode(v.value())?;
                    index.push(
                        &kv.key,
                        RevEntry {
                            main: main as i64,
                            sub,
                            tombstone,
                            create: kv.create_revision,
                            version: kv.version,
                            lease: kv.lease,
                        },
                    );
                }
                let lt = w.open_table(LEASES)?;
                let now = Instant::now();
                for row in lt.iter()? {
                    let (id, ttl) = row?;
                    // As etcd after a leader change: every lease gets its full TTL again.
                    leases.insert(
                        id.value(),
                        LeaseEntry {
                            ttl: ttl.value(),
                            expiry: now + Duration::from_secs(ttl.value().max(0) as u64),
                            keys: BTreeSet::new(),
                        },
                    );
                }
            }
            w.commit()?;
        }
        for (key, ki) in &index.keys {
            if let Some(e) = ki.revs.last()
                && !e.tombstone
                && e.lease != 0
                && let Some(l) = leases.get_mut(&e.lease)
            {
                l.keys.insert(key.clone());
            }
        }

        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let store = Arc::new(Store {
            db: RwLock::new(db),
            path,
            index: RwLock::new(index),
            committed: AtomicI64::new(revision),
            leases: Mutex::new(leases),
            writer: tx,
            events,
            cluster_id,
            member_id,
            raft_term,
        });
        // Weak, so that dropping the last handle closes the channel and ends the thread.
        let writer_store = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("datastore-writer".into())
            .spawn(move || writer_loop(writer_store, rx, revision))
            .map_err(|e| EtcdError::Storage(e.to_string()))?;
        Ok(store)
    }

    /// The latest committed revision.
    pub fn revision(&self) -> i64 {
        self.committed.load(Ordering::Acquire)
    }

    pub fn compacted(&self) -> i64 {
        self.index.read().compacted
    }

    /// A response header at the current revision.
    pub fn header(&self) -> PbResponseHeader {
        self.header_at(self.revision())
    }

    pub fn header_at(&self, revision: i64) -> PbResponseHeader {
        PbResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        }
    }

    /// Subscribes to committed events (subscribe before reading history to miss nothing).
    pub fn subscribe(&self) -> broadcast::Receiver<EventBatch> {
        self.events.subscribe()
    }

    /// Queues a write and waits for its durable commit.
    pub async fn write(&self, op: WriteOp) -> Result<WriteResult, EtcdError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriteReq { op, reply })
            .await
            .map_err(|_| EtcdError::Storage("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| EtcdError::Storage("the writer has stopped".into()))?
    }

    /// A linearizable read (single member: every committed write is visible).
    pub fn range(&self, req: &PbRangeRequest) -> Result<PbRangeResponse, EtcdError> {
        if req.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        let db = self.db.read();
        let idx = self.index.read();
        let current = self.revision();
        let rev = resolve_rev(req.revision, current, idx.compacted)?;
        let entries = idx.range_at(&req.key, &req.range_end, rev);
        // Begun while the index lock keeps compaction out: every entry's record is in it.
        let rtxn = db.begin_read()?;
        let owned: Vec<(Vec<u8>, RevEntry)> =
            entries.into_iter().map(|(k, e)| (k.clone(), e)).collect();
        drop(idx);
        let table = rtxn.open_table(REVS)?;
        let mut resp = range_response(req, owned, |e| load_kv(&table, e))?;
        resp.header = Some(self.header_at(current));
        Ok(resp)
    }

    /// Events for `[key, range_end)` with revisions in `from..=to`, from history. The index
    /// lock is held only to check compaction and for each prev_kv lookup, so a long replay
    /// does not hold up writes.
    pub fn history(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        to: i64,
        prev_kv: bool,
    ) -> Result<Vec<PbEvent>, EtcdError> {
        let db = self.db.read();
        let rtxn = {
            let idx = self.index.read();
            if from < idx.compacted {
                return Err(EtcdError::Compacted);
            }
            db.begin_read()?
        };
        let table = rtxn.open_table(REVS)?;
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for row in table.range((from as u64, 0u32)..=(to as u64, u32::MAX))? {
            let (_, v) = row?;
            let (tombstone, kv) = decode(v.value())?;
            if !key_in_range(&kv.key, key, range_end) {
                continue;
            }
            let prev = if prev_kv {
                let entry = self.index.read().keys.get(&kv.key).and_then(|ki| {
                    let pos = ki.revs.iter().position(|e| e.main == kv.mod_revision)?;
                    pos.checked_sub(1).map(|p| ki.revs[p])
                });
                // The snapshot still holds a record compaction has since dropped.
                entry
                    .filter(|e| !e.tombstone)
                    .and_then(|e| load_kv(&table, &e).ok())
            } else {
                None
            };
            out.push(make_event(tombstone, kv, prev));
        }
        Ok(out)
    }

    /// Size of the database file in bytes.
    pub fn db_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Bytes in use by live data (approximate: the stored bytes of every table).
    pub fn db_size_in_use(&self) -> Result<u64, EtcdError> {
        let db = self.db.read();
        let r = db.begin_read()?;
        let t = r.open_table(REVS)?;
        let s = t.stats()?;
        Ok(s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes())
    }

    /// Rewrites the database file without free space (etcd's defragment).
    pub fn defragment(&self) -> Result<(), EtcdError> {
        let mut db = self.db.write();
        db.compact()
            .map_err(|e| EtcdError::Storage(e.to_string()))?;
        Ok(())
    }

    /// A CRC-32 over every record up to `rev` (etcd's HashKV, in our own encoding).
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64), EtcdError> {
        let current = self.revision();
        let db = self.db.read();
        let compacted = self.compacted();
        let rev = resolve_rev(rev, current, compacted)?;
        let r = db.begin_read()?;
        let t = r.open_table(REVS)?;
        let mut h = crc32fast::Hasher::new();
        for row in t.range(..=(rev as u64, u32::MAX))? {
            let (k, v) = row?;
            let (main, sub) = k.value();
            h.update(&main.to_be_bytes());
            h.update(&sub.to_be_bytes());
            h.update(v.value());
        }
        Ok((h.finalize(), compacted, rev))
    }

    /// A consistent copy of the whole database, as the bytes of a redb file.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, EtcdError> {
        static SEQ: AtomicI64 = AtomicI64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .path
            .with_extension(format!("snapshot.{}.{n}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let result = self.snapshot_to(&tmp).and_then(|()| {
            let mut bytes = std::fs::read(&tmp).map_err(|e| EtcdError::Storage(e.to_string()))?;
            // etcd's snapshots are whole pages; redb's files are too, but make sure.
            bytes.resize(bytes.len().div_ceil(512) * 512, 0);
            Ok(bytes)
        });
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Writes a consistent copy of the whole database to `dest` (a new file).
    pub fn snapshot_to(&self, dest: &Path) -> Result<(), EtcdError> {
        let db = self.db.read();
        let r = db.begin_read()?;
        let out = Database::create(dest).map_err(|e| EtcdError::Storage(e.to_string()))?;
        let mut w = out.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        {
            let src = r.open_table(REVS)?;
            let mut dst = w.open_table(REVS)?;
            for row in src.iter()? {
                let (k, v) = row?;
                dst.insert(k.value(), v.value())?;
            }
            let src = r.open_table(META)?;
            let mut dst = w.open_table(META)?;
            for row in src.iter()? {
                let (k, v) = row?;
                dst.insert(k.value(), v.value())?;
            }
            let src = r.open_table(LEASES)?;
            let mut dst = w.open_table(LEASES)?;
            for row in src.iter()? {
                let (k, v) = row?;
                dst.insert(k.value(), v.value())?;
            }
        }
        w.commit()?;
        Ok(())
    }
}

fn rand_id() -> u64 {
    use rand::RngCore;
    rand::rng().next_u64().max(1)
}

/// The revision a read at `requested` sees, with etcd's errors.
fn resolve_rev(requested: i64, current: i64, compacted: i64) -> Result<i64, EtcdError> {
    if requested <= 0 {
        return Ok(current);
    }
    if requested > current {
        return Err(EtcdError::FutureRev);
    }
    if requested < compacted {
        return Err(EtcdError::Compacted);
    }
    Ok(requested)
}

pub fn key_in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0] {
        k >= key
    } else {
        k >= key && k < range_end
    }
}

fn make_event(tombstone: bool, kv: PbKeyValue, prev: Option<PbKeyValue>) -> PbEvent {
    PbEvent {
        r#type: if tombstone { 1 } else { 0 },
        kv: Some(kv),
        prev_kv: prev,
    }
}

/// Builds a Range response from the entries at the read revision: filters, sort, limit,
/// count, keys_only/count_only, as etcd does.
fn range_response(
    req: &PbRangeRequest,
    entries: Vec<(Vec<u8>, RevEntry)>,
    mut load: impl FnMut(&RevEntry) -> Result<PbKeyValue, EtcdError>,
) -> Result<PbRangeResponse, EtcdError> {
    let count = entries.len() as i64;
    let mut kept: Vec<(Vec<u8>, RevEntry)> = entries
        .into_iter()
        .filter(|(_, e)| {
            (req.min_mod_revision == 0 || e.main >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || e.main <= req.max_mod_revision)
                && (req.min_create_revision == 0 || e.create >= req.min_create_revision)
                && (req.max_create_revision == 0 || e.create <= req.max_create_revision)
        })
        .collect();
    let mut resp = PbRangeResponse {
        count,
        ..Default::default()
    };
    if req.count_only {
        return Ok(resp);
    }
    // SortOrder NONE=0 ASCEND=1 DESCEND=2; SortTarget KEY=0 VERSION=1 CREATE=2 MOD=3 VALUE=4.
    let order = if req.sort_order == 0 && req.sort_target != 0 {
        1
    } else {
        req.sort_order
    };
    let needs_values = req.sort_target == 4 && order != 0;
    let mut kvs: Vec<PbKeyValue> = Vec::new();
    if needs_values {
        for (_, e) in &kept {
            kvs.push(load(e)?);
        }
        kvs.sort_by(|a, b| a.value.cmp(&b.value));
        if order == 2 {
            kvs.reverse();
        }
    } else {
        if order != 0 {
            match req.sort_target {
                1 => kept.sort_by_key(|(k, e)| (e.version, k.clone())),
                2 => kept.sort_by_key(|(k, e)| (e.create, k.clone())),
                3 => kept.sort_by_key(|(k, e)| (e.main, k.clone())),
                _ => {}
            }
            if order == 2 {
                kept.reverse();
            }
        }
    }
    let limit = if req.limit > 0 {
        req.limit as usize
    } else {
        usize::MAX
    };
    let total = if needs_values { kvs.len() } else { kept.len() };
    resp.more = total > limit;
    if !needs_values {
        for (k, e) in kept.iter().take(limit) {
            if req.keys_only {
                kvs.push(PbKeyValue {
                    key: k.clone(),
                    create_revision: e.create,
                    mod_revision: e.main,
                    version: e.version,
                    lease: e.lease,
                    value: Vec::new(),
                });
            } else {
                kvs.push(load(e)?);
            }
        }
    } else {
        kvs.truncate(limit);
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
    }
    resp.kvs = kvs;
    Ok(resp)
}

/// Checks a txn's limits and that no key is written twice in one branch (etcd's rules).
/// Each op is visited once, however deep the nesting.
pub fn check_txn(t: &PbTxnRequest) -> Result<(), EtcdError> {
    check_limits(t)?;
    for branch in [&t.success, &t.failure] {
        branch_writes(branch)?;
    }
    Ok(())
}

fn check_limits(t: &PbTxnRequest) -> Result<(), EtcdError> {
    if t.compare.len() > MAX_TXN_OPS
        || t.success.len() > MAX_TXN_OPS
        || t.failure.len() > MAX_TXN_OPS
    {
        return Err(EtcdError::TooManyOps);
    }
    Ok(())
}

type Writes = (BTreeSet<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

/// The keys a branch puts and the ranges it deletes, nested txns included; fails on a key
/// written twice or put inside a range the same branch deletes.
fn branch_writes(ops: &[etcd_client::proto::PbTxnRequestOp]) -> Result<Writes, EtcdError> {
    let mut puts = BTreeSet::new();
    let mut dels = Vec::new();
    for op in ops {
        match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) => {
                if p.key.is_empty() {
                    return Err(EtcdError::EmptyKey);
                }
                if !puts.insert(p.key.clone()) {
                    return Err(EtcdError::DuplicateKey);
                }
            }
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                if d.key.is_empty() {
                    return Err(EtcdError::EmptyKey);
                }
                dels.push((d.key.clone(), d.range_end.clone()));
            }
            Some(PbTxnOpRequest::RequestTxn(inner)) => {
                check_limits(inner)?;
                // Writes of either nested branch must not clash with this branch's.
                for branch in [&inner.success, &inner.failure] {
                    let (p2, d2) = branch_writes(branch)?;
                    for k in p2 {
                        if !puts.insert(k) {
                            return Err(EtcdError::DuplicateKey);
                        }
                    }
                    dels.extend(d2);
                }
            }
            Some(PbTxnOpRequest::RequestRange(r)) if r.key.is_empty() => {
                return Err(EtcdError::EmptyKey);
            }
            Some(PbTxnOpRequest::RequestRange(_)) | None => {}
        }
    }
    for p in &puts {
        if dels.iter().any(|(k, e)| key_in_range(p, k, e)) {
            return Err(EtcdError::DuplicateKey);
        }
    }
    Ok((puts, dels))
}

/// Applies requests inside one redb write transaction at revision `main`.
struct Applier<'a, 't> {
    idx: &'a mut Index,
    revs: &'a mut redb::Table<'t, (u64, u32), &'static [u8]>,
    lease_table: &'a mut redb::Table<'t, i64, i64>,
    leases: &'a mut HashMap<i64, LeaseEntry>,
    /// The revision this request writes at (current + 1).
    main: i64,
    sub: u32,
    events: Vec<PbEvent>,
}

impl Applier<'_, '_> {
    fn wrote(&self) -> bool {
        self.sub > 0
    }

    /// The revision reads inside the request see: everything, including its own writes.
    fn read_rev(&self) -> i64 {
        self.main
    }

    fn live(&self, key: &[u8]) -> Option<RevEntry> {
        self.idx
            .keys
            .get(key)
            .and_then(|ki| ki.at(self.read_rev()).copied())
    }

    fn load(&self, e: &RevEntry) -> Result<PbKeyValue, EtcdError> {
        load_kv(&*self.revs, e)
    }

    fn detach(&mut self, key: &[u8], lease: i64) {
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
        {
            l.keys.remove(key);
        }
    }

    fn check_put(&self, p: &PbPutRequest) -> Result<(), EtcdError> {
        if p.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        if p.ignore_value && !p.value.is_empty() {
            return Err(EtcdError::ValueProvided);
        }
        if p.ignore_lease && p.lease != 0 {
            return Err(EtcdError::LeaseProvided);
        }
        if (p.ignore_value || p.ignore_lease) && self.live(&p.key).is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(())
    }

    fn put(&mut self, p: &PbPutRequest) -> Result<PbPutResponse, EtcdError> {
        self.check_put(p)?;
        self.write_put(p)
    }

    /// A put already checked (alone, or as part of a planned txn).
    fn write_put(&mut self, p: &PbPutRequest) -> Result<PbPutResponse, EtcdError> {
        let prev = self.live(&p.key);
        let prev_kv = match &prev {
            Some(e) => Some(self.load(e)?),
            None => None,
        };
        let value = if p.ignore_value {
            prev_kv
                .as_ref()
                .map(|kv| kv.value.clone())
                .unwrap_or_default()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.map(|e| e.lease).unwrap_or(0)
        } else {
            p.lease
        };
        let (create, version) = match prev {
            Some(e) => (e.create, e.version + 1),
            None => (self.main, 1),
        };
        let kv = PbKeyValue {
            key: p.key.clone(),
            create_revision: create,
            mod_revision: self.main,
            version,
            value,
            lease,
        };
        self.revs
            .insert((self.main as u64, self.sub), encode(false, &kv).as_slice())?;
        self.idx.push(
            &p.key,
            RevEntry {
                main: self.main,
                sub: self.sub,
                tombstone: false,
                create,
                version,
                lease,
            },
        );
        self.sub += 1;
        if let Some(e) = prev
            && e.lease != lease
        {
            self.detach(&p.key, e.lease);
        }
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
        {
            l.keys.insert(p.key.clone());
        }
        self.events.push(make_event(false, kv, prev_kv.clone()));
        Ok(PbPutResponse {
            header: None,
            prev_kv: if p.prev_kv { prev_kv } else { None },
        })
    }

    fn delete(&mut self, d: &PbDeleteRequest) -> Result<PbDeleteResponse, EtcdError> {
        if d.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        let targets: Vec<(Vec<u8>, RevEntry)> = self
            .idx
            .range_at(&d.key, &d.range_end, self.read_rev())
            .into_iter()
            .map(|(k, e)| (k.clone(), e))
            .collect();
        let mut prev_kvs = Vec::new();
        for (key, e) in &targets {
            let prev = self.load(e)?;
            let tomb = PbKeyValue {
                key: key.clone(),
                mod_revision: self.main,
                ..Default::default()
            };
            self.revs
                .insert((self.main as u64, self.sub), encode(true, &tomb).as_slice())?;
            self.idx.push(
                key,
                RevEntry {
                    main: self.main,
                    sub: self.sub,
                    tombstone: true,
                    create: 0,
                    version: 0,
                    lease: 0,
                },
            );
            self.sub += 1;
            self.detach(key, e.lease);
            self.events.push(make_event(true, tomb, Some(prev.clone())));
            if d.prev_kv {
                prev_kvs.push(prev);
            }
        }
        Ok(PbDeleteResponse {
            header: None,
            deleted: targets.len() as i64,
            prev_kvs,
        })
    }

    fn compare(&self, c: &PbCompare) -> Result<bool, EtcdError> {
        let targets: Vec<RevEntry> = if c.range_end.is_empty() {
            self.live(&c.key).into_iter().collect()
        } else {
            self.idx
                .range_at(&c.key, &c.range_end, self.read_rev())
                .into_iter()
                .map(|(_, e)| e)
                .collect()
        };
        // CompareTarget VERSION=0 CREATE=1 MOD=2 VALUE=3 LEASE=4.
        if targets.is_empty() {
            if c.target == 3 {
                return Ok(false);
            }
            return Ok(compare_one(
                c,
                &RevEntry {
                    main: 0,
                    sub: 0,
                    tombstone: false,
                    create: 0,
                    version: 0,
                    lease: 0,
                },
                &[],
            ));
        }
        for e in &targets {
            let value = if c.target == 3 {
                self.load(e)?.value
            } else {
                Vec::new()
            };
            if !compare_one(c, e, &value) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Evaluates every compare on the path the txn will take (nested ones included, against
    /// the state before the txn, as etcd does) and checks every op on it, so that applying can
    /// no longer fail half-way: a failed txn writes nothing.
    fn plan_txn(&self, t: &PbTxnRequest, path: &mut Vec<bool>) -> Result<(), EtcdError> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(PbTxnOpRequest::RequestPut(p)) => self.check_put(p)?,
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    if r.key.is_empty() {
                        return Err(EtcdError::EmptyKey);
                    }
                    if r.revision > 0 && r.revision < self.idx.compacted {
                        return Err(EtcdError::Compacted);
                    }
                    if r.revision >= self.main {
                        return Err(EtcdError::FutureRev);
                    }
                }
                Some(PbTxnOpRequest::RequestDeleteRange(d)) if d.key.is_empty() => {
                    return Err(EtcdError::EmptyKey);
                }
                Some(PbTxnOpRequest::RequestTxn(inner)) => self.plan_txn(inner, path)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn txn(&mut self, t: &PbTxnRequest) -> Result<PbTxnResponse, EtcdError> {
        let mut path = Vec::new();
        self.plan_txn(t, &mut path)?;
        self.apply_txn(t, &mut path.into_iter())
    }

    /// Applies a planned txn, taking each branch decision from `path`.
    fn apply_txn(
        &mut self,
        t: &PbTxnRequest,
        path: &mut std::vec::IntoIter<bool>,
    ) -> Result<PbTxnResponse, EtcdError> {
        let ok = path
            .next()
            .ok_or_else(|| EtcdError::Storage("txn plan out of step".into()))?;
        let ops = if ok { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    let rev = if r.revision > 0 {
                        r.revision
                    } else {
                        self.read_rev()
                    };
                    let entries: Vec<(Vec<u8>, RevEntry)> = self
                        .idx
                        .range_at(&r.key, &r.range_end, rev)
                        .into_iter()
                        .map(|(k, e)| (k.clone(), e))
                        .collect();
                    let revs = &*self.revs;
                    PbTxnOpResponse::ResponseRange(range_response(r, entries, |e| {
                        load_kv(revs, e)
                    })?)
                }
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    PbTxnOpResponse::ResponsePut(self.write_put(p)?)
                }
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                    PbTxnOpResponse::ResponseDeleteRange(self.delete(d)?)
                }
                Some(PbTxnOpRequest::RequestTxn(inner)) => {
                    PbTxnOpResponse::ResponseTxn(self.apply_txn(inner, path)?)
                }
                None => continue,
            };
            responses.push(PbResponseOp {
                response: Some(response),
            });
        }
        Ok(PbTxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }

    fn revoke(&mut self, id: i64) -> Result<(), EtcdError> {
        let lease = self.leases.remove(&id).ok_or(EtcdError::LeaseNotFound)?;
        self.lease_table.remove(id)?;
        for key in lease.keys {
            self.delete(&PbDeleteRequest {
                key,
                ..Default::default()
            })?;
        }
        Ok(())
    }
}

fn compare_one(c: &PbCompare, e: &RevEntry, value: &[u8]) -> bool {
    use std::cmp::Ordering as O;
    let ord = match (&c.target_union, c.target) {
        (Some(PbTargetUnion::Version(v)), _) => e.version.cmp(v),
        (Some(PbTargetUnion::CreateRevision(v)), _) => e.create.cmp(v),
        (Some(PbTargetUnion::ModRevision(v)), _) => e.main.cmp(v),
        (Some(PbTargetUnion::Value(v)), _) => value.cmp(v.as_slice()),
        (Some(PbTargetUnion::Lease(v)), _) => e.lease.cmp(v),
        // An absent union compares against the zero value of its target.
        (None, 3) => value.cmp(&[][..]),
        (None, 0) => e.version.cmp(&0),
        (None, 1) => e.create.cmp(&0),
        (None, 2) => e.main.cmp(&0),
        (None, _) => e.lease.cmp(&0),
    };
    // CompareResult EQUAL=0 GREATER=1 LESS=2 NOT_EQUAL=3.
    match c.result {
        0 => ord == O::Equal,
        1 => ord == O::Greater,
        2 => ord == O::Less,
        _ => ord != O::Equal,
    }
}

/// Compaction at `rev`: drops every revision a read at `rev` or later cannot see.
fn compact_index(idx: &mut Index, rev: i64) -> Vec<(u64, u32)> {
    let mut dropped = Vec::new();
    idx.keys.retain(|_, ki| {
        let keep_from = ki.revs.partition_point(|e| e.main <= rev);
        if keep_from > 0 {
            // The latest revision at or below `rev` stays readable at `rev`, unless deleted.
            let last = keep_from - 1;
            let cut = if ki.revs[last].tombstone {
                keep_from
            } else {
                last
            };
            for e in ki.revs.drain(..cut) {
                dropped.push((e.main as u64, e.sub));
            }
            if ki.revs.capacity() > 2 * ki.revs.len() {
                ki.revs.shrink_to_fit();
            }
        }
        !ki.revs.is_empty()
    });
    idx.compacted = rev;
    dropped
}

/// The writer thread: takes every queued request into one durable transaction.
fn writer_loop(store: std::sync::Weak<Store>, mut rx: mpsc::Receiver<WriteReq>, mut current: i64) {
    while let Some(first) = rx.blocking_recv() {
        let Some(store) = store.upgrade() else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match commit_batch(&store, &batch, current) {
            Ok((results, events, new_current)) => {
                current = new_current;
                store.committed.store(current, Ordering::Release);
                if !events.is_empty() {
                    // No subscribers is fine: nobody is watching.
                    let _ = store.events.send(Arc::new(events));
                }
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
            }
            Err(e) => {
                // The index may now hold writes that never reached disk: restarting rebuilds
                // it from what did. Tell every waiting client first.
                tracing::error!(error = %e, "datastore commit failed; exiting");
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
                std::process::exit(1);
            }
        }
    }
}

type BatchOutcome = (Vec<Result<WriteResult, EtcdError>>, Vec<PbEvent>, i64);

fn commit_batch(
    store: &Store,
    batch: &[WriteReq],
    mut current: i64,
) -> Result<BatchOutcome, EtcdError> {
    // Compaction may only reach revisions readers can already see, never this batch's own.
    let batch_start = current;
    let db = store.db.read();
    let mut w = db.begin_write()?;
    w.set_durability(Durability::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut all_events = Vec::new();
    {
        let mut revs = w.open_table(REVS)?;
        let mut meta = w.open_table(META)?;
        let mut lease_table = w.open_table(LEASES)?;
        let mut idx = store.index.write();
        let mut leases = store.leases.lock();
        for req in batch {
            let mut ap = Applier {
                idx: &mut idx,
                revs: &mut revs,
                lease_table: &mut lease_table,
                leases: &mut leases,
                main: current + 1,
                sub: 0,
                events: Vec::new(),
            };
            let outcome = apply_op(&mut ap, &req.op, batch_start);
            let wrote = ap.wrote();
            let events = std::mem::take(&mut ap.events);
            match outcome {
                Ok(mut result) => {
                    if wrote {
                        current += 1;
                        all_events.extend(events);
                    }
                    set_header(&mut result, store.header_at(current));
                    results.push(Ok(result));
                }
                // Requests are checked before they write, so only the storage can fail after a
                // write began: abandon the whole uncommitted batch (the writer then exits and
                // a restart rebuilds the index from disk) rather than commit half a request.
                Err(e) if wrote => return Err(e),
                Err(e) => results.push(Err(e)),
            }
        }
        meta.insert(META_REVISION, current)?;
        meta.insert(META_COMPACTED, idx.compacted)?;
        if let Some(rev) = batch.iter().find_map(|r| match r.op {
            WriteOp::Compact(rev) => Some(rev),
            _ => None,
        }) {
            tracing::debug!(rev, "compacted");
        }
    }
    w.commit()?;
    Ok((results, all_events, current))
}

fn apply_op(
    ap: &mut Applier<'_, '_>,
    op: &WriteOp,
    committed: i64,
) -> Result<WriteResult, EtcdError> {
    match op {
        WriteOp::Put(p) => ap.put(p).map(WriteResult::Put),
        WriteOp::Delete(d) => ap.delete(d).map(WriteResult::Delete),
        WriteOp::Txn(t) => {
            check_txn(t)?;
            ap.txn(t).map(WriteResult::Txn)
        }
        WriteOp::Compact(rev) => {
            if *rev > committed {
                return Err(EtcdError::FutureRev);
            }
            if *rev <= ap.idx.compacted {
                return Err(EtcdError::Compacted);
            }
            for key in compact_index(ap.idx, *rev) {
                ap.revs.remove(key)?;
            }
            Ok(WriteResult::Compacted(PbResponseHeader::default()))
        }
        WriteOp::LeaseGrant { id, ttl } => {
            if *ttl > MAX_LEASE_TTL {
                return Err(EtcdError::LeaseTtlTooLarge);
            }
            let ttl = (*ttl).max(MIN_LEASE_TTL);
            let id = if *id == 0 {
                let mut id = (rand_id() >> 1) as i64;
                while id == 0 || ap.leases.contains_key(&id) {
                    id = (rand_id() >> 1) as i64;
                }
                id
            } else {
                *id
            };
            if ap.leases.contains_key(&id) {
                return Err(EtcdError::LeaseExist);
            }
            ap.lease_table.insert(id, ttl)?;
            ap.leases.insert(
                id,
                LeaseEntry {
                    ttl,
                    expiry: Instant::now() + Duration::from_secs(ttl as u64),
                    keys: BTreeSet::new(),
                },
            );
            Ok(WriteResult::LeaseGranted {
                header: PbResponseHeader::default(),
                id,
                ttl,
            })
        }
        WriteOp::LeaseRevoke(id) => {
            ap.revoke(*id)?;
            Ok(WriteResult::LeaseRevoked(PbResponseHeader::default()))
        }
        WriteOp::LeaseExpire(id) => {
            let expired = ap
                .leases
                .get(id)
                .is_some_and(|l| l.expiry <= Instant::now());
            if expired {
                ap.revoke(*id)?;
            }
            Ok(WriteResult::LeaseRevoked(PbResponseHeader::default()))
        }
    }
}

/// Gives a txn's every response, nested ones included, the txn's header, as etcd does.
fn set_txn_header(t: &mut PbTxnResponse, h: PbResponseHeader) {
    t.header = Some(h);
    for op in &mut t.responses {
        match &mut op.response {
            Some(PbTxnOpResponse::ResponseRange(r)) => r.header = Some(h),
            Some(PbTxnOpResponse::ResponsePut(p)) => p.header = Some(h),
            Some(PbTxnOpResponse::ResponseDeleteRange(d)) => d.header = Some(h),
            Some(PbTxnOpResponse::ResponseTxn(inner)) => set_txn_header(inner, h),
            None => {}
        }
    }
}

fn set_header(r: &mut WriteResult, h: PbResponseHeader) {
    match r {
        WriteResult::Put(p) => p.header = Some(h),
        WriteResult::Delete(d) => d.header = Some(h),
        WriteResult::Txn(t) => set_txn_header(t, h),
        WriteResult::Compacted(x) | WriteResult::LeaseRevoked(x) => *x = h,
        WriteResult::LeaseGranted { header, .. } => *header = h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> WriteOp {
        WriteOp::Put(PbPutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    fn get(store: &Store, key: &str, rev: i64) -> Result<Option<String>, EtcdError> {
        let r = store.range(&PbRangeRequest {
            key: key.into(),
            revision: rev,
            ..Default::default()
        })?;
        Ok(r.kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    #[tokio::test]
    async fn a_txn_failing_on_a_later_op_writes_nothing() {
        use etcd_client::proto::PbTxnRequestOp;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let op = |r| PbTxnRequestOp { request: Some(r) };
        let txn = PbTxnRequest {
            success: vec![
                op(PbTxnOpRequest::RequestPut(PbPutRequest {
                    key: "first".into(),
                    value: "1".into(),
                    ..Default::default()
                })),
                op(PbTxnOpRequest::RequestTxn(PbTxnRequest {
                    success: vec![op(PbTxnOpRequest::RequestPut(PbPutRequest {
                        key: "second".into(),
                        lease: 424242,
                        ..Default::default()
                    }))],
                    ..Default::default()
                })),
            ],
            ..Default::default()
        };
        let err = store.write(WriteOp::Txn(txn)).await.unwrap_err();
        assert_eq!(err, EtcdError::LeaseNotFound);
        assert_eq!(store.revision(), 1, "no revision was used");
        assert_eq!(
            get(&store, "first", 0).unwrap(),
            None,
            "no partial write is visible"
        );
    }

    #[tokio::test]
    async fn revisions_history_compaction_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.revision(), 1);
        store.write(put("a", "1")).await.unwrap();
        store.write(put("a", "2")).await.unwrap();
        store
            .write(WriteOp::Delete(PbDeleteRequest {
                key: "a".into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(store.revision(), 4);
        assert_eq!(get(&store, "a", 2).unwrap().as_deref(), Some("1"));
        assert_eq!(get(&store, "a", 3).unwrap().as_deref(), Some("2"));
        assert_eq!(get(&store, "a", 0).unwrap(), None);
        assert_eq!(get(&store, "a", 9), Err(EtcdError::FutureRev));
        store.write(WriteOp::Compact(3)).await.unwrap();
        assert_eq!(get(&store, "a", 2), Err(EtcdError::Compacted));
        assert_eq!(get(&store, "a", 3).unwrap().as_deref(), Some("2"));
        drop(store);
        // The writer thread holds the database until its channel closes.
        std::thread::sleep(Duration::from_millis(100));
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.revision(), 4);
        assert_eq!(store.compacted(), 3);
        assert_eq!(get(&store, "a", 3).unwrap().as_deref(), Some("2"));
    }
}
