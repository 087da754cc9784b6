//! Token shards: the files `lmforge prepare` writes and `lmforge train --data DIR`
//! memory-maps.
//!
//! # The lmforge layout
//!
//! A prepared directory holds:
//!
//! - `manifest.json` ([`Manifest`]): format version, tokenizer kind, vocabulary
//!   size, end-of-text token id, the shards of each split with their token
//!   counts, and the inputs already finished (so an interrupted `prepare` resumes).
//! - `tokenizer.json`: the tokenizer the shards were made with.
//! - `train_000000.bin`, `val_000000.bin`, ...: token shards ([`header`] gives
//!   their layout). Only the shards the manifest lists belong to the data set;
//!   a shard is listed only once complete.
//!
//! # Other layouts
//!
//! nanoGPT's `train.bin`/`val.bin` and llm.c's `*_train_*.bin`/`*_val_*.bin`
//! are read too ([`foreign`]). [`Layout::detect`] tells the three apart; it is
//! the one place that decides whether a directory holds shards.
//!
//! # Reading
//!
//! Each split is the concatenation of its shards, in manifest (or name) order, as
//! one [`TokenSource`](super::TokenSource): a training window may cross from one
//! shard into the next, exactly as it would cross a document boundary inside one
//! shard (documents are separated by the end-of-text token anyway). Shards are
//! memory-mapped, so the operating system pages in only the windows that are
//! read ([`reader`]).
//!
//! | file          | holds                                               |
//! |---------------|-----------------------------------------------------|
//! | `header.rs`   | the lmforge shard header and token width ([`Dtype`]) |
//! | `writer.rs`   | [`ShardWriter`]: one shard, renamed into place when complete |
//! | `manifest.rs` | `manifest.json` ([`Manifest`]), with prepare's resume records |
//! | `layout.rs`   | [`Layout`] and its detection                        |
//! | `reader.rs`   | memory maps, [`ShardedTokens`], [`ShardSet`]        |
//! | `foreign.rs`  | the nanoGPT and llm.c layouts                       |

pub mod foreign;
pub mod header;
pub mod layout;
pub mod manifest;
pub mod reader;
pub mod writer;

pub use self::header::{Dtype, HEADER_BYTES, MAGIC, ShardHeader, VERSION};
pub use self::layout::Layout;
pub use self::manifest::{
    FinishedInput, MANIFEST_FILE, MANIFEST_VERSION, Manifest, PrepareSettings, SPLIT_RULE,
    ShardEntry, TOKENIZER_FILE,
};
pub use self::reader::{ShardSet, ShardedTokens};
pub use self::writer::ShardWriter;
pub use super::fnv1a64;
