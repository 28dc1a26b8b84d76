//! File attachments (issue 30), the lower layer: where their bytes live and the rules
//! every uploaded file goes through before anyone else sees it.
//!
//! An attachment is made of three things:
//! - its **bytes**, in an object store ([`objects`]): the local filesystem in the
//!   all-in-one (`./data/attachments`), an S3-compatible bucket in the dev stack and the
//!   cluster. The original and its thumbnail are two objects whose keys follow from the
//!   attachment's id, so nothing else has to remember where they are.
//! - its **metadata** (conversation, uploader, name, size, content type, dimensions), in
//!   rows beside the conversations, so membership checks and deletion stay in one
//!   transaction with the rest of chat's state (docs/ARCHITECTURE.md, "Attachments"):
//!   `crate::store`'s `attachments.rs`.
//! - the **rules** here, free of I/O where they can be: the content type is sniffed from
//!   the bytes and never taken from the client ([`content`]), names are sanitised, only
//!   four image types are ever shown inline, and images are measured from their header
//!   before anything decodes them, so a decompression bomb is refused for the price of
//!   a few bytes. Thumbnails are made by a bounded pool ([`thumbnails`]) off the
//!   request path.
//!
//! [`files`] puts them together: an upload from its first chunk to its row, downloads,
//! the purge of removed attachments' objects, the expiry of unclaimed uploads and the
//! orphan sweep.

pub mod content;
mod files;
pub mod objects;
pub mod thumbnails;

pub use files::{
    DECLARED_SLACK, Download, Files, Limits, ORPHAN_GRACE, SweepReport, UploadError, UploadStart,
    maintain,
};
pub use objects::Objects;
pub use thumbnails::Thumbnailer;
