//! A document's revision tree, CouchDB's rules for it, and its on-disk encoding.
//!
//! The tree is stored flat: a list of nodes, each with its parent's index. Roots are nodes whose
//! parent is unknown (the first revision, or the oldest one kept after stemming). Leaves are
//! nodes without children; every leaf is a version of the document that some replica considers
//! current, and more than one leaf means a conflict.
//!
//! # Encoding (version 1), all integers big-endian
//!
//! | size | field |
//! |---|---|
//! | 1 | version, `0x01` |
//! | 4 | node count `n` |
//! | per node: 8 | generation |
//! | 1 | hash length `h` (≤ 128) |
//! | `h` | hash (ASCII hex) |
//! | 4 | parent index + 1 (0: no parent) |
//! | 1 | flags: bit 0 deleted, bit 1 body stored |

use std::collections::HashMap;

use crate::error::Error;
use crate::rev::RevId;

/// One revision in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The revision id.
    pub rev: RevId,
    /// Index of the parent node, if known.
    pub parent: Option<usize>,
    /// Whether this revision is a deletion (tombstone).
    pub deleted: bool,
    /// Whether this revision's body is stored (false for ancestors learnt only by id, and after
    /// compaction for non-leaf revisions).
    pub has_body: bool,
}

/// The result of merging a path into a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The leaf revision was already in the tree: nothing changed.
    AlreadyPresent,
    /// New revisions were added; `index` is the new leaf.
    Added {
        /// Index of the newly added leaf.
        index: usize,
    },
}

/// A document's revision tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevTree {
    nodes: Vec<Node>,
}

/// What a revision's status is in `_revs_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevStatus {
    /// Body stored, not deleted.
    Available,
    /// A deletion.
    Deleted,
    /// Body not stored.
    Missing,
}

impl RevStatus {
    /// CouchDB's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RevStatus::Available => "available",
            RevStatus::Deleted => "deleted",
            RevStatus::Missing => "missing",
        }
    }
}

impl RevTree {
    /// An empty tree (no document).
    pub fn new() -> RevTree {
        RevTree::default()
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> Option<&Node> {
        self.nodes.get(index)
    }

    /// Whether the tree has no revisions.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of `rev`, if present.
    pub fn find(&self, rev: &RevId) -> Option<usize> {
        self.nodes.iter().position(|n| &n.rev == rev)
    }

    fn child_flags(&self) -> Vec<bool> {
        let mut has_child = vec![false; self.nodes.len()];
        for node in &self.nodes {
            if let Some(p) = node.parent {
                if let Some(flag) = has_child.get_mut(p) {
                    *flag = true;
                }
            }
        }
        has_child
    }

    /// Indexes of the leaves, in no particular order.
    pub fn leaves(&self) -> Vec<usize> {
        self.child_flags()
            .iter()
            .enumerate()
            .filter(|(_, has)| !**has)
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether node `index` is a leaf.
    pub fn is_leaf(&self, index: usize) -> bool {
        !self.nodes.iter().any(|n| n.parent == Some(index))
    }

    /// Leaves sorted as CouchDB ranks them: non-deleted first, then highest generation, then
    /// highest hash. The first is the winner.
    pub fn ranked_leaves(&self) -> Vec<usize> {
        let mut leaves = self.leaves();
        leaves.sort_by(|&a, &b| {
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            (!nb.deleted, &nb.rev).cmp(&(!na.deleted, &na.rev))
        });
        leaves
    }

    /// The winning leaf.
    pub fn winner(&self) -> Option<usize> {
        self.ranked_leaves().first().copied()
    }

    /// The path from node `index` up to its root (the node first).
    pub fn path(&self, index: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = Some(index);
        while let Some(i) = cur {
            if out.len() > self.nodes.len() {
                break; // a corrupt tree with a cycle; never loop
            }
            out.push(i);
            cur = self.nodes.get(i).and_then(|n| n.parent);
        }
        out
    }

    /// `_revisions` of node `index`: its generation and the hashes up its path, newest first.
    pub fn revisions(&self, index: usize) -> (u64, Vec<&str>) {
        let path = self.path(index);
        let start = self.nodes.get(index).map_or(0, |n| n.rev.pos());
        (
            start,
            path.iter().map(|&i| self.nodes[i].rev.hash()).collect(),
        )
    }

    /// Status of node `index` for `_revs_info`.
    pub fn status(&self, index: usize) -> RevStatus {
        match self.nodes.get(index) {
            Some(n) if !n.has_body => RevStatus::Missing,
            Some(n) if n.deleted => RevStatus::Deleted,
            Some(_) => RevStatus::Available,
            None => RevStatus::Missing,
        }
    }

    /// Leaves descending from (or equal to) node `index`.
    pub fn leaves_under(&self, index: usize) -> Vec<usize> {
        self.leaves()
            .into_iter()
            .filter(|&leaf| self.path(leaf).contains(&index))
            .collect()
    }

    /// Adds a new revision as a child of `parent` (or as a new root). The caller has checked that
    /// `parent` is a leaf (or that the tree allows a new root).
    pub fn add_child(&mut self, parent: Option<usize>, rev: RevId, deleted: bool) -> usize {
        self.nodes.push(Node {
            rev,
            parent,
            deleted,
            has_body: true,
        });
        self.nodes.len() - 1
    }

    /// Merges a path of revisions, `path[0]` the newest (the leaf) and each next one its parent,
    /// as given by a peer's `_revisions`. Nodes already present are joined; missing ancestors are
    /// added without bodies. The leaf gets `deleted` and is marked as having a body.
    pub fn merge_path(&mut self, path: &[RevId], deleted: bool) -> Merge {
        let Some(leaf) = path.first() else {
            return Merge::AlreadyPresent;
        };
        if self.find(leaf).is_some() {
            return Merge::AlreadyPresent;
        }
        let mut index: HashMap<&RevId, usize> = HashMap::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            index.insert(&n.rev, i);
        }
        let existing: Vec<Option<usize>> = path.iter().map(|r| index.get(r).copied()).collect();
        drop(index);
        let mut parent: Option<usize> = None;
        for (k, rev) in path.iter().enumerate().rev() {
            let i = match existing[k] {
                Some(i) => {
                    if self.nodes[i].parent.is_none() {
                        self.nodes[i].parent = parent;
                    }
                    i
                }
                None => {
                    self.nodes.push(Node {
                        rev: rev.clone(),
                        parent,
                        deleted: k == 0 && deleted,
                        has_body: k == 0,
                    });
                    self.nodes.len() - 1
                }
            };
            parent = Some(i);
        }
        Merge::Added {
            index: parent.unwrap_or(0),
        }
    }

    /// Marks node `index` as having no stored body (after compaction).
    pub fn drop_body(&mut self, index: usize) {
        if let Some(n) = self.nodes.get_mut(index) {
            n.has_body = false;
        }
    }

    /// Keeps at most `limit` revisions on each leaf's path (CouchDB's `_revs_limit`) and returns
    /// the revisions removed.
    pub fn stem(&mut self, limit: usize) -> Vec<RevId> {
        let limit = limit.max(1);
        let mut keep = vec![false; self.nodes.len()];
        for leaf in self.leaves() {
            for &i in self.path(leaf).iter().take(limit) {
                keep[i] = true;
            }
        }
        if keep.iter().all(|k| *k) {
            return Vec::new();
        }
        let mut remap = vec![None; self.nodes.len()];
        let mut kept = Vec::with_capacity(self.nodes.len());
        let mut removed = Vec::new();
        for (i, node) in self.nodes.drain(..).enumerate() {
            if keep[i] {
                remap[i] = Some(kept.len());
                kept.push(node);
            } else {
                removed.push(node.rev);
            }
        }
        for node in &mut kept {
            node.parent = node.parent.and_then(|p| remap.get(p).copied().flatten());
        }
        self.nodes = kept;
        removed
    }

    /// Encodes the tree (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.nodes.len() * 48);
        out.push(1);
        out.extend_from_slice(&(self.nodes.len() as u32).to_be_bytes());
        for n in &self.nodes {
            out.extend_from_slice(&n.rev.pos().to_be_bytes());
            let hash = n.rev.hash().as_bytes();
            out.push(hash.len() as u8);
            out.extend_from_slice(hash);
            let parent = n.parent.map_or(0u32, |p| p as u32 + 1);
            out.extend_from_slice(&parent.to_be_bytes());
            out.push(u8::from(n.deleted) | (u8::from(n.has_body) << 1));
        }
        out
    }

    /// Decodes a tree, refusing anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<RevTree, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("revision tree: {what}"));
        let mut r = Reader { bytes, at: 0 };
        if r.u8().ok_or_else(|| corrupt("empty"))? != 1 {
            return Err(corrupt("unknown version"));
        }
        let count = r.u32().ok_or_else(|| corrupt("truncated count"))? as usize;
        if count > bytes.len() / 14 {
            return Err(corrupt("node count exceeds the data"));
        }
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let pos = r.u64().ok_or_else(|| corrupt("truncated node"))?;
            let len = r.u8().ok_or_else(|| corrupt("truncated node"))? as usize;
            let hash = r.take(len).ok_or_else(|| corrupt("truncated hash"))?;
            let hash = std::str::from_utf8(hash).map_err(|_| corrupt("hash not ASCII"))?;
            let rev = RevId::new(pos, hash).map_err(|_| corrupt("bad revision id"))?;
            let parent = r.u32().ok_or_else(|| corrupt("truncated node"))? as usize;
            let flags = r.u8().ok_or_else(|| corrupt("truncated node"))?;
            nodes.push(Node {
                rev,
                parent: parent.checked_sub(1),
                deleted: flags & 1 != 0,
                has_body: flags & 2 != 0,
            });
        }
        if r.at != bytes.len() {
            return Err(corrupt("trailing bytes"));
        }
        if nodes.iter().any(|n| n.parent.is_some_and(|p| p >= count)) {
            return Err(corrupt("parent index out of range"));
        }
        Ok(RevTree { nodes })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(s: &str) -> RevId {
        s.parse().unwrap()
    }

    fn path(revs: &[&str]) -> Vec<RevId> {
        revs.iter().map(|r| rev(r)).collect()
    }

    #[test]
    fn linear_then_conflict_then_winner() {
        let mut t = RevTree::new();
        let a = t.add_child(None, rev("1-a"), false);
        let b = t.add_child(Some(a), rev("2-b"), false);
        assert_eq!(t.leaves(), vec![b]);
        // A conflicting branch from a peer.
        assert_eq!(
            t.merge_path(&path(&["2-c", "1-a"]), false),
            Merge::Added { index: 2 }
        );
        assert_eq!(t.leaves().len(), 2);
        assert_eq!(
            t.nodes()[t.winner().unwrap()].rev,
            rev("2-c"),
            "higher hash wins"
        );
        // Deleting the winner hands the win to the other branch.
        let c = t.find(&rev("2-c")).unwrap();
        t.add_child(Some(c), rev("3-d"), true);
        assert_eq!(
            t.nodes()[t.winner().unwrap()].rev,
            rev("2-b"),
            "non-deleted beats longer"
        );
        assert_eq!(
            t.merge_path(&path(&["2-c", "1-a"]), false),
            Merge::AlreadyPresent
        );
    }

    #[test]
    fn merge_joins_stemmed_paths_and_marks_missing_bodies() {
        let mut t = RevTree::new();
        t.merge_path(&path(&["3-c", "2-b"]), false);
        assert_eq!(
            t.nodes()[t.find(&rev("3-c")).unwrap()].parent,
            t.find(&rev("2-b"))
        );
        assert_eq!(t.status(t.find(&rev("2-b")).unwrap()), RevStatus::Missing);
        // A longer path supplies the missing root and links it.
        t.merge_path(&path(&["4-d", "3-c", "2-b", "1-a"]), false);
        assert_eq!(t.leaves().len(), 1);
        let (start, ids) = t.revisions(t.find(&rev("4-d")).unwrap());
        assert_eq!((start, ids), (4, vec!["d", "c", "b", "a"]));
    }

    #[test]
    fn stemming_keeps_limit_per_leaf() {
        let mut t = RevTree::new();
        let mut parent = None;
        for i in 1..=10u64 {
            parent = Some(t.add_child(parent, RevId::new(i, "a").unwrap(), false));
        }
        let removed = t.stem(3);
        assert_eq!(removed.len(), 7);
        assert_eq!(t.nodes().len(), 3);
        let leaf = t.winner().unwrap();
        assert_eq!(t.revisions(leaf).1.len(), 3);
        assert_eq!(t.path(leaf).len(), 3);
    }

    #[test]
    fn encoding_round_trip_and_corruption() {
        let mut t = RevTree::new();
        t.merge_path(&path(&["2-ff", "1-ab"]), true);
        t.merge_path(&path(&["2-ee", "1-ab"]), false);
        let bytes = t.encode();
        assert_eq!(RevTree::decode(&bytes).unwrap(), t);
        for cut in 0..bytes.len() {
            assert!(RevTree::decode(&bytes[..cut]).is_err());
        }
        let mut bad = bytes.clone();
        bad.push(0);
        assert!(RevTree::decode(&bad).is_err());
    }
}
