//! Attachment content: preparing it for storage (compression, digests, spooling to disk so a
//! large upload is never held in memory) and the chunked content-addressed form it is stored in.
//!
//! Content is stored once per distinct stored byte string, keyed by its SHA-256, in chunks of
//! [`CHUNK_SIZE`] bytes: two documents (or two revisions) with the same attachment share it.
//! As Apache CouchDB does, attachments of compressible types (CouchDB's default list: `text/*`,
//! `application/json`, `application/javascript`, `application/xml`) are stored gzip-compressed
//! with zlib at level 8 — the very bytes CouchDB stores, so the `digest` (the MD5 of the stored
//! gzip stream) is CouchDB's too; `length` is the decoded length, and
//! `encoding`/`encoded_length` describe the stored form. Other types are stored as sent, and
//! their digest is the MD5 of the bytes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Stored content is split into chunks of this many bytes.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;
/// Content up to this size is prepared in memory; larger content spills to a temporary file.
const MEMORY_LIMIT: usize = 256 * 1024;

/// How stored bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Stored as sent.
    Identity,
    /// Stored gzip-compressed.
    Gzip,
}

/// Whether CouchDB would store a content type compressed.
pub fn is_compressible(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || matches!(
            mime.as_str(),
            "application/json" | "application/javascript" | "application/xml"
        )
}

/// A gzip encoder whose output is byte for byte what Apache CouchDB stores: zlib at level 8
/// (memLevel 8, default strategy), with the header zlib writes on Unix (no name, mtime 0,
/// OS byte 3). Never flush it mid-stream: a sync flush changes the bytes.
fn couch_gzip<W: Write>(sink: W) -> GzEncoder<W> {
    flate2::GzBuilder::new()
        .operating_system(3)
        .write(sink, Compression::new(8))
}

/// `md5-<base64>` as CouchDB writes digests.
pub(crate) fn digest_string(md5: &[u8; 16]) -> String {
    format!("md5-{}", data_encoding::BASE64.encode(md5))
}

enum Spool {
    Memory(Vec<u8>),
    File { file: File, path: PathBuf },
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Spool::File { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The stored bytes as they are written: spooled, hashed and counted.
struct Sink {
    spool: Spool,
    tmp_dir: PathBuf,
    md5: Md5,
    sha256: Sha256,
    len: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.md5.update(buf);
        self.sha256.update(buf);
        self.len += buf.len() as u64;
        if let Spool::Memory(mem) = &mut self.spool {
            if mem.len() + buf.len() > MEMORY_LIMIT {
                let (file, path) = temp_file(&self.tmp_dir)?;
                let mut spool = Spool::File { file, path };
                if let Spool::File { file, .. } = &mut spool {
                    file.write_all(mem)?;
                }
                self.spool = spool;
            }
        }
        match &mut self.spool {
            Spool::Memory(mem) => mem.extend_from_slice(buf),
            Spool::File { file, .. } => file.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn temp_file(dir: &Path) -> io::Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    let path = dir.join(format!(
        "att-{}.spool",
        data_encoding::HEXLOWER.encode(&nonce)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((file, path))
}

/// Prepares attachment content for storage. Feed it with [`Write`], then [`finish`](Self::finish).
pub struct AttachmentWriter {
    content_type: String,
    gzip: Option<GzEncoder<Sink>>,
    plain: Option<Sink>,
    decoded_len: u64,
    pre_encoded: Option<(Encoding, u64)>,
}

impl AttachmentWriter {
    /// Content sent decoded: compressed for storage when `compress` and the type is compressible.
    pub fn new(content_type: &str, compress: bool, tmp_dir: &Path) -> AttachmentWriter {
        let sink = Sink {
            spool: Spool::Memory(Vec::new()),
            tmp_dir: tmp_dir.to_path_buf(),
            md5: Md5::new(),
            sha256: Sha256::new(),
            len: 0,
        };
        let (gzip, plain) = if compress && is_compressible(content_type) {
            (Some(couch_gzip(sink)), None)
        } else {
            (None, Some(sink))
        };
        AttachmentWriter {
            content_type: content_type.to_owned(),
            gzip,
            plain,
            decoded_len: 0,
            pre_encoded: None,
        }
    }

    /// Content that arrives already gzip-encoded (a replicator's multipart part marked
    /// `"encoding":"gzip"`), stored as it is; `decoded_length` is the `length` the sender declared.
    pub fn pre_encoded_gzip(
        content_type: &str,
        decoded_length: u64,
        tmp_dir: &Path,
    ) -> AttachmentWriter {
        let mut writer = AttachmentWriter::new(content_type, false, tmp_dir);
        writer.pre_encoded = Some((Encoding::Gzip, decoded_length));
        writer
    }

    /// Finishes the content.
    pub fn finish(self) -> Result<PreparedAttachment> {
        let io_err = |e| Error::io("preparing attachment", Path::new("(spool)"), e);
        let (sink, mut encoding) = match (self.gzip, self.plain) {
            (Some(gz), _) => (gz.finish().map_err(io_err)?, Encoding::Gzip),
            (None, Some(sink)) => (sink, Encoding::Identity),
            (None, None) => return Err(Error::Corrupt("attachment writer without a sink".into())),
        };
        let mut length = self.decoded_len;
        if let Some((enc, declared)) = self.pre_encoded {
            encoding = enc;
            length = declared;
        }
        let md5: [u8; 16] = sink.md5.finalize().into();
        let key: [u8; 32] = sink.sha256.finalize().into();
        Ok(PreparedAttachment {
            content_type: self.content_type,
            length,
            stored_len: sink.len,
            encoding,
            md5,
            key,
            spool: sink.spool,
        })
    }
}

impl Write for AttachmentWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.decoded_len += buf.len() as u64;
        match (&mut self.gzip, &mut self.plain) {
            (Some(gz), _) => gz.write_all(buf)?,
            (None, Some(sink)) => sink.write_all(buf)?,
            (None, None) => return Err(io::Error::other("attachment writer finished")),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Attachment content ready to be stored.
pub struct PreparedAttachment {
    /// MIME type.
    pub content_type: String,
    /// Decoded length.
    pub length: u64,
    /// Stored (possibly encoded) length.
    pub stored_len: u64,
    /// How the stored bytes are encoded.
    pub encoding: Encoding,
    /// MD5 of the stored bytes.
    pub md5: [u8; 16],
    /// SHA-256 of the stored bytes: the storage key.
    pub key: [u8; 32],
    spool: Spool,
}

impl std::fmt::Debug for PreparedAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedAttachment")
            .field("content_type", &self.content_type)
            .field("length", &self.length)
            .field("stored_len", &self.stored_len)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl PreparedAttachment {
    /// Prepares in-memory content (inline base64 data).
    pub fn from_bytes(
        content_type: &str,
        data: &[u8],
        compress: bool,
        tmp_dir: &Path,
    ) -> Result<PreparedAttachment> {
        let mut writer = AttachmentWriter::new(content_type, compress, tmp_dir);
        writer
            .write_all(data)
            .map_err(|e| Error::io("preparing attachment", tmp_dir, e))?;
        writer.finish()
    }

    /// `md5-<base64>` of the stored bytes.
    pub fn digest(&self) -> String {
        digest_string(&self.md5)
    }

    /// Calls `f` with each stored chunk in order (at least one, possibly empty).
    pub fn for_each_chunk(&mut self, mut f: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
        match &mut self.spool {
            Spool::Memory(mem) => {
                if mem.is_empty() {
                    return f(0, &[]);
                }
                for (i, chunk) in mem.chunks(CHUNK_SIZE).enumerate() {
                    f(i as u32, chunk)?;
                }
                Ok(())
            }
            Spool::File { file, path } => {
                let io_err = |e| Error::io("reading attachment spool", path, e);
                file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                let mut buf = vec![0u8; CHUNK_SIZE];
                let mut index = 0u32;
                loop {
                    let mut filled = 0;
                    while filled < CHUNK_SIZE {
                        let n = file.read(&mut buf[filled..]).map_err(io_err)?;
                        if n == 0 {
                            break;
                        }
                        filled += n;
                    }
                    if filled == 0 && index > 0 {
                        return Ok(());
                    }
                    f(index, &buf[..filled])?;
                    index += 1;
                    if filled < CHUNK_SIZE {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Number of chunks stored for `stored_len` bytes.
pub(crate) fn chunk_count(stored_len: u64) -> u32 {
    if stored_len == 0 {
        1
    } else {
        stored_len.div_ceil(CHUNK_SIZE as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn collect(p: &mut PreparedAttachment) -> Vec<u8> {
        let mut out = Vec::new();
        p.for_each_chunk(|_, c| {
            out.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn binary_is_stored_as_is_with_md5_digest() {
        let dir = tempfile::tempdir().unwrap();
        let mut p =
            PreparedAttachment::from_bytes("image/png", b"hello", true, dir.path()).unwrap();
        assert_eq!(p.encoding, Encoding::Identity);
        assert_eq!(p.digest(), "md5-XUFAKrxLKna5cZ2REBfFkg==");
        assert_eq!(collect(&mut p), b"hello");
    }

    #[test]
    fn text_is_gzipped_and_decodes_back() {
        let dir = tempfile::tempdir().unwrap();
        let text = "to be or not to be ".repeat(100);
        let mut p = PreparedAttachment::from_bytes(
            "text/plain; charset=utf-8",
            text.as_bytes(),
            true,
            dir.path(),
        )
        .unwrap();
        assert_eq!(p.encoding, Encoding::Gzip);
        assert_eq!(p.length, text.len() as u64);
        assert!(p.stored_len < p.length);
        let stored = collect(&mut p);
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&stored[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
        let md5: [u8; 16] = Md5::digest(&stored).into();
        assert_eq!(p.digest(), digest_string(&md5));
    }

    /// CouchDB 3.4.3's digests for these `text/plain` attachments (measured on a real CouchDB:
    /// ../shared/notes/couchdb-differences.md), and zlib's for a larger text.
    #[test]
    fn gzip_digests_are_couchdbs() {
        let dir = tempfile::tempdir().unwrap();
        let words = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
        ];
        let (mut x, mut large) = (12345u64, Vec::new());
        for i in 0..6000 {
            x = (x * 1_103_515_245 + 12345) % (1 << 31);
            large.push(words[(x % 16) as usize].to_owned());
            if i % 13 == 0 {
                large.push((x % 1000).to_string());
            }
        }
        let large = large.join(" ");
        let hello = format!("hello attachment 0{}", " ".repeat(200));
        for (text, digest, stored) in [
            (
                "This is a base64 encoded text",
                "md5-qUUYqS41RhwF0TrCsTAxFg==",
                47,
            ),
            ("", "md5-cCkGbCesb17xjWYNV0GXmg==", 20),
            (hello.as_str(), "md5-2TY6EWUa/iy6V2mzEZ9rAg==", 41),
            (large.as_str(), "md5-tS5+aVSxfslUOyuO/DuxBw==", 1703),
        ] {
            let mut p =
                PreparedAttachment::from_bytes("text/plain", text.as_bytes(), true, dir.path())
                    .unwrap();
            assert_eq!(
                (p.digest().as_str(), p.stored_len),
                (digest, stored),
                "{}",
                text.len()
            );
            assert_eq!(&collect(&mut p)[..10], b"\x1f\x8b\x08\0\0\0\0\0\0\x03");
        }
    }

    #[test]
    fn large_content_spills_to_disk_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(5 * CHUNK_SIZE + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut w = AttachmentWriter::new("application/octet-stream", true, dir.path());
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        let mut p = w.finish().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "spooled to a file"
        );
        let mut sizes = Vec::new();
        p.for_each_chunk(|i, c| {
            sizes.push((i, c.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes.len(), 6);
        assert!(sizes[..5].iter().all(|(_, n)| *n == CHUNK_SIZE));
        assert_eq!(sizes[5], (5, 17));
        assert_eq!(chunk_count(p.stored_len), 6);
        assert_eq!(collect(&mut p), data);
        drop(p);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spool removed"
        );
    }

    #[test]
    fn compressible_types() {
        for t in [
            "text/plain",
            "TEXT/HTML; charset=x",
            "application/json",
            "application/javascript",
            "application/xml",
        ] {
            assert!(is_compressible(t), "{t}");
        }
        // Not in CouchDB's default list (it stores these as sent).
        for t in [
            "application/ld+json",
            "image/svg+xml",
            "image/png",
            "application/octet-stream",
            "application/zip",
            "",
        ] {
            assert!(!is_compressible(t), "{t}");
        }
    }
}
