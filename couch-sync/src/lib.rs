#![doc = include_str!("../README.md")]

mod attachment;
pub mod doc;
pub mod error;
pub mod json;
pub mod mango;
mod read;
mod records;
pub mod rev;
pub mod revtree;
#[cfg(feature = "server")]
pub mod server;
mod store;
mod write;

pub use attachment::{AttachmentWriter, Encoding, PreparedAttachment, is_compressible};
pub use doc::{AttachmentInput, AttachmentKind, DocUpdate, IdKind, ParseOptions, Revisions};
pub use error::{Error, ErrorKind, Result};
pub use read::{
    ATTACHMENT_CHUNK_SIZE, AllDocs, AllDocsQuery, AllDocsRow, AttachmentMode, AttachmentRef,
    Change, Changes, ChangesFilter, ChangesQuery, Doc, DocFilter, GetOptions, OpenRev, OpenRevs,
    RevsDiff,
};
pub use rev::RevId;
pub use store::{Database, DbInfo, Store, StoreConfig, check_db_name, parse_seq};
pub use write::BulkResult;
