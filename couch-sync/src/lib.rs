#![doc = include_str!("../README.md")]

mod attachment;
pub mod clock;
pub mod doc;
pub mod error;
// Every build keeps Mango indexes up to date on writes (a database may later be served);
// only the `server` feature queries them.
#[cfg_attr(not(feature = "server"), allow(dead_code, unused_imports))]
mod find;
pub mod hlc;
#[cfg(feature = "js")]
pub mod js;
pub mod json;
pub mod mango;
mod read;
mod records;
pub mod reduce;
#[cfg(feature = "client")]
pub mod replicate;
pub mod rev;
pub mod revtree;
#[cfg(feature = "server")]
pub mod server;
mod store;
pub mod view;
mod write;

pub use attachment::{AttachmentWriter, Encoding, PreparedAttachment, is_compressible};
pub use doc::{AttachmentInput, AttachmentKind, DocUpdate, IdKind, ParseOptions, Revisions};
pub use error::{Error, ErrorKind, Result};
pub use hlc::ConflictPolicy;
pub use read::{
    ATTACHMENT_CHUNK_SIZE, AllDocs, AllDocsQuery, AllDocsRow, AttachmentMode, AttachmentRef,
    Change, Changes, ChangesFilter, ChangesQuery, Doc, DocFilter, GetOptions, OpenRev, OpenRevs,
    RevsDiff,
};
pub use rev::RevId;
pub use store::{Database, DbInfo, Store, StoreConfig, check_db_name, parse_seq};
pub use write::{BulkResult, WriteContext};

/// Entry points for the fuzz targets in `fuzz/`; not part of the API. Panics are findings.
#[doc(hidden)]
#[allow(clippy::panic)]
pub mod fuzzing {
    use crate::doc::{DocUpdate, ParseOptions, parse_bulk_docs};

    fn opts(dir: &std::path::Path) -> ParseOptions<'_> {
        ParseOptions {
            compress: true,
            tmp_dir: dir,
        }
    }

    /// A request body as a document (`PUT /db/doc`).
    pub fn document(data: &[u8]) {
        let dir = std::env::temp_dir();
        if let Ok(object) = crate::json::parse_object(data) {
            if let Ok(update) = DocUpdate::from_json(object, opts(&dir)) {
                if let Some(revisions) = &update.revisions {
                    let _ = revisions.path();
                }
            }
        }
    }

    /// A `_bulk_docs` body.
    pub fn bulk_docs(data: &[u8]) {
        let dir = std::env::temp_dir();
        let _ = parse_bulk_docs(data, 1 << 20, opts(&dir));
    }

    /// Stored revision-tree bytes: decoding never panics, and what decodes re-encodes the same.
    pub fn revtree(data: &[u8]) {
        if let Ok(tree) = crate::revtree::RevTree::decode(data) {
            let _ = tree.winner();
            let _ = tree.leaves();
            assert_eq!(
                crate::revtree::RevTree::decode(&tree.encode()).ok(),
                Some(tree)
            );
        }
    }
}
