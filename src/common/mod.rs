//! What two or more components truly share: the snap-style data roots, atomic file writes,
//! the crash-safe file-set transaction, host facts (hostname, addresses), the reloading serving
//! certificate and test fault hooks.
//!
//! Owns no files of its own; every component decides what it writes through these helpers.

pub mod args;
pub mod clock;
pub mod component;
pub mod events;
pub mod fault;
pub mod fsutil;
pub mod heap;
pub mod host;
pub mod insecure_tls;
pub mod labels;
pub mod paths;
pub mod quantity;
pub mod servingcert;
pub mod txn;
