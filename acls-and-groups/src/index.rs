//! The caches behind [`Policy::may`](crate::Policy::may): group closures and compiled ACLs.
//!
//! **Groups.** Each defined group gets a dense id in name order. The graph has an edge from a
//! group to every group that lists it as a member ("is in"). Tarjan's algorithm (iterative, so
//! deep nesting cannot overflow the stack) finds the strongly connected components; a component
//! with more than one group, or a group that lists itself, is a cycle. Visiting components in
//! the order Tarjan emits them (every component after all components it points to), each
//! group's **row** — the bit set of the groups it is transitively in, itself included — is its
//! component's groups plus the rows of the components it points to. The whole build is
//! O((groups + edges) × groups / 64) word operations and at most [`MAX_GROUPS`]² bits
//! (2 MiB); a principal's direct groups come from a hash map.
//!
//! A principal is in group `g` when one of its direct groups has `g` in its row: one bit test per
//! direct group. References to undefined groups are dropped when building (such a group has no
//! members, so nobody is in it through them).
//!
//! **ACLs.** Each member list becomes a sorted key array (binary search), an `anonymous` flag and
//! the ids of the defined groups it names.
//!
//! [`MAX_GROUPS`]: crate::limits::MAX_GROUPS

use std::collections::{BTreeMap, BTreeSet, HashMap};

use public_key_identity::KeyId;

use crate::name::{DbName, GroupName, ViewName};
use crate::policy::{AclScope, DbAcl, Group};
use crate::principal::Member;

const UNSET: u32 = u32::MAX;

/// Group closures, built from the groups alone.
pub(crate) struct GroupIndex {
    names: Vec<GroupName>,
    ids: HashMap<GroupName, u32>,
    /// Words per row.
    words: usize,
    /// `names.len()` rows of `words` words: the groups each group is in, itself included.
    rows: Vec<u64>,
    /// For each group, the groups that list it directly, ascending.
    parents: Vec<Vec<u32>>,
    /// For each key, the groups that list it directly, ascending.
    key_groups: HashMap<KeyId, Box<[u32]>>,
    /// The groups that list `anonymous` directly, ascending.
    anonymous_groups: Box<[u32]>,
    cycles: Vec<Vec<GroupName>>,
}

impl GroupIndex {
    pub(crate) fn build(groups: &BTreeMap<GroupName, Group>) -> GroupIndex {
        let names: Vec<GroupName> = groups.keys().cloned().collect();
        let n = names.len();
        let ids: HashMap<GroupName, u32> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), id(i)))
            .collect();
        let mut parents: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut key_groups: HashMap<KeyId, Vec<u32>> = HashMap::new();
        let mut anonymous_groups = Vec::new();
        for (parent, group) in groups.values().enumerate() {
            let parent = id(parent);
            for member in &group.members {
                match member {
                    Member::Key(key) => key_groups.entry(*key).or_default().push(parent),
                    Member::Anonymous => anonymous_groups.push(parent),
                    Member::Group(child) => {
                        if let Some(&child) = ids.get(child) {
                            parents[child as usize].push(parent);
                        }
                    }
                }
            }
        }
        // Parents were pushed in ascending order, so every list is sorted.
        let words = n.div_ceil(64);
        let mut index = GroupIndex {
            names,
            ids,
            words,
            rows: vec![0; n * words],
            parents,
            key_groups: key_groups
                .into_iter()
                .map(|(key, groups)| (key, groups.into_boxed_slice()))
                .collect(),
            anonymous_groups: anonymous_groups.into_boxed_slice(),
            cycles: Vec::new(),
        };
        index.close();
        index
    }

    /// Tarjan's strongly connected components, iteratively, filling rows and cycles.
    fn close(&mut self) {
        let n = self.names.len();
        let words = self.words;
        let mut order = vec![UNSET; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut component = vec![UNSET; n];
        let mut stack: Vec<u32> = Vec::new();
        let mut calls: Vec<(u32, usize)> = Vec::new();
        let mut next = 0u32;
        let mut components = 0u32;
        let mut row = vec![0u64; words];
        for root in 0..n {
            if order[root] != UNSET {
                continue;
            }
            order[root] = next;
            low[root] = next;
            next += 1;
            stack.push(id(root));
            on_stack[root] = true;
            calls.push((id(root), 0));
            while let Some(&mut (v, ref mut edge)) = calls.last_mut() {
                let vi = v as usize;
                if let Some(&w) = self.parents[vi].get(*edge) {
                    *edge += 1;
                    let wi = w as usize;
                    if order[wi] == UNSET {
                        order[wi] = next;
                        low[wi] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[wi] = true;
                        calls.push((w, 0));
                    } else if on_stack[wi] {
                        low[vi] = low[vi].min(order[wi]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(u, _)) = calls.last() {
                    let ui = u as usize;
                    low[ui] = low[ui].min(low[vi]);
                }
                if low[vi] != order[vi] {
                    continue;
                }
                // v is the root of a component: pop it.
                let mut members = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w as usize] = false;
                    component[w as usize] = components;
                    members.push(w);
                    if w == v {
                        break;
                    }
                }
                row.fill(0);
                for &m in &members {
                    set_bit(&mut row, m);
                }
                for &m in &members {
                    for &p in &self.parents[m as usize] {
                        if component[p as usize] != components {
                            let start = p as usize * words;
                            for (dst, src) in row.iter_mut().zip(&self.rows[start..start + words]) {
                                *dst |= src;
                            }
                        }
                    }
                }
                for &m in &members {
                    let start = m as usize * words;
                    self.rows[start..start + words].copy_from_slice(&row);
                }
                if members.len() > 1 || self.parents[vi].contains(&v) {
                    let mut cycle: Vec<GroupName> = members
                        .iter()
                        .map(|&m| self.names[m as usize].clone())
                        .collect();
                    cycle.sort();
                    self.cycles.push(cycle);
                }
                components += 1;
            }
        }
        self.cycles.sort();
    }

    pub(crate) fn cycles(&self) -> &[Vec<GroupName>] {
        &self.cycles
    }

    pub(crate) fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub(crate) fn name(&self, group: u32) -> GroupName {
        self.names[group as usize].clone()
    }

    /// The groups that list `key` directly.
    pub(crate) fn key_groups(&self, key: &KeyId) -> &[u32] {
        self.key_groups.get(key).map_or(&[], |groups| groups)
    }

    /// The groups that list `anonymous` directly.
    pub(crate) fn anonymous_groups(&self) -> &[u32] {
        &self.anonymous_groups
    }

    /// The names of every group that any of `direct` is in (itself included), by name.
    pub(crate) fn closure(&self, direct: &[u32]) -> Vec<GroupName> {
        let mut out: Vec<GroupName> = (0..self.names.len())
            .filter(|&to| {
                let to = u32::try_from(to).unwrap_or(u32::MAX);
                direct.iter().any(|&from| self.is_in(from, to))
            })
            .filter_map(|to| self.names.get(to).cloned())
            .collect();
        out.sort();
        out
    }

    /// Whether group `from` is (transitively, or by being it) in group `to`.
    #[inline]
    fn is_in(&self, from: u32, to: u32) -> bool {
        let word = from as usize * self.words + (to / 64) as usize;
        self.rows.get(word).is_some_and(|w| w >> (to % 64) & 1 == 1)
    }

    /// The first of `direct` that is in `to`.
    #[inline]
    pub(crate) fn reaching(&self, direct: &[u32], to: u32) -> Option<u32> {
        direct.iter().copied().find(|&d| self.is_in(d, to))
    }

    /// A shortest chain of groups from `from` up to `to`, both included (`from` is in the second,
    /// which is in the third, ...). Breadth-first over the groups that are themselves in `to`.
    pub(crate) fn path(&self, from: u32, to: u32) -> Vec<GroupName> {
        if from == to {
            return vec![self.name(from)];
        }
        let mut seen = vec![0u64; self.words];
        set_bit(&mut seen, from);
        // (group, position of its predecessor in `queue`)
        let mut queue: Vec<(u32, usize)> = vec![(from, usize::MAX)];
        let mut head = 0;
        while let Some(&(node, _)) = queue.get(head) {
            for &p in &self.parents[node as usize] {
                if get_bit(&seen, p) || !self.is_in(p, to) {
                    continue;
                }
                set_bit(&mut seen, p);
                queue.push((p, head));
                if p == to {
                    let mut chain = Vec::new();
                    let mut at = queue.len() - 1;
                    while let Some(&(group, pred)) = queue.get(at) {
                        chain.push(self.name(group));
                        at = pred;
                    }
                    chain.reverse();
                    return chain;
                }
            }
            head += 1;
        }
        // Unreachable when `from` is in `to`; answer something honest anyway.
        vec![self.name(from), self.name(to)]
    }
}

fn id(index: usize) -> u32 {
    // Group counts are bounded by MAX_GROUPS, far below u32::MAX.
    u32::try_from(index).unwrap_or(UNSET)
}

fn set_bit(bits: &mut [u64], bit: u32) {
    if let Some(word) = bits.get_mut((bit / 64) as usize) {
        *word |= 1 << (bit % 64);
    }
}

fn get_bit(bits: &[u64], bit: u32) -> bool {
    bits.get((bit / 64) as usize)
        .is_some_and(|w| w >> (bit % 64) & 1 == 1)
}

/// One member list, compiled.
#[derive(Default)]
pub(crate) struct List {
    pub(crate) keys: Box<[KeyId]>,
    pub(crate) anonymous: bool,
    /// Ids of the defined groups named, ascending (= name order).
    pub(crate) groups: Box<[u32]>,
}

impl List {
    fn compile(members: &BTreeSet<Member>, groups: &GroupIndex) -> List {
        let mut keys = Vec::new();
        let mut anonymous = false;
        let mut ids = Vec::new();
        for member in members {
            match member {
                Member::Key(key) => keys.push(*key),
                Member::Anonymous => anonymous = true,
                Member::Group(name) => ids.extend(groups.id(name.as_str())),
            }
        }
        // A BTreeSet yields keys sorted and groups in name order, which is id order.
        List {
            keys: keys.into_boxed_slice(),
            anonymous,
            groups: ids.into_boxed_slice(),
        }
    }
}

/// One ACL, compiled.
pub(crate) struct Acl {
    pub(crate) read: List,
    pub(crate) write: List,
    pub(crate) admin: List,
    pub(crate) views: HashMap<ViewName, List>,
}

impl Acl {
    fn compile(acl: &DbAcl, groups: &GroupIndex) -> Acl {
        Acl {
            read: List::compile(&acl.read, groups),
            write: List::compile(&acl.write, groups),
            admin: List::compile(&acl.admin, groups),
            views: acl
                .views
                .iter()
                .map(|(view, list)| (view.clone(), List::compile(list, groups)))
                .collect(),
        }
    }
}

/// All ACLs, compiled against a [`GroupIndex`].
pub(crate) struct AclIndex {
    pub(crate) all: Option<Acl>,
    pub(crate) databases: HashMap<DbName, Acl>,
}

impl AclIndex {
    pub(crate) fn build(acls: &BTreeMap<AclScope, DbAcl>, groups: &GroupIndex) -> AclIndex {
        let mut index = AclIndex {
            all: None,
            databases: HashMap::with_capacity(acls.len()),
        };
        for (scope, acl) in acls {
            let compiled = Acl::compile(acl, groups);
            match scope {
                AclScope::AllDatabases => index.all = Some(compiled),
                AclScope::Database(db) => {
                    index.databases.insert(db.clone(), compiled);
                }
            }
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(edges: &[(&str, &[&str])]) -> BTreeMap<GroupName, Group> {
        let mut map = BTreeMap::new();
        for (name, members) in edges {
            let name = GroupName::new(name).unwrap();
            let mut group = Group::new(name.clone());
            for m in *members {
                group.members.insert(Member::group(m).unwrap());
            }
            map.insert(name, group);
        }
        map
    }

    fn is_in(index: &GroupIndex, from: &str, to: &str) -> bool {
        index.is_in(index.id(from).unwrap(), index.id(to).unwrap())
    }

    #[test]
    fn closure_of_a_chain_and_a_cycle() {
        // a ∈ b ∈ c; d ∈ e ∈ d (cycle); f ∈ f (self loop); e ∈ c.
        let index = GroupIndex::build(&groups(&[
            ("b", &["a"]),
            ("c", &["b", "e"]),
            ("a", &[]),
            ("d", &["e"]),
            ("e", &["d"]),
            ("f", &["f"]),
        ]));
        assert!(is_in(&index, "a", "a"));
        assert!(is_in(&index, "a", "b"));
        assert!(is_in(&index, "a", "c"));
        assert!(!is_in(&index, "c", "a"));
        assert!(is_in(&index, "d", "e") && is_in(&index, "e", "d"));
        assert!(is_in(&index, "d", "c"));
        assert!(!is_in(&index, "a", "d"));
        assert!(is_in(&index, "f", "f"));
        let names = |c: &[GroupName]| c.iter().map(|g| g.as_str().to_owned()).collect::<Vec<_>>();
        let cycles: Vec<_> = index.cycles().iter().map(|c| names(c)).collect();
        assert_eq!(cycles, vec![vec!["d", "e"], vec!["f"]]);
        let path = |from: &str, to: &str| {
            names(&index.path(index.id(from).unwrap(), index.id(to).unwrap()))
        };
        assert_eq!(path("a", "c"), ["a", "b", "c"]);
        assert_eq!(path("d", "c"), ["d", "e", "c"]);
        assert_eq!(path("a", "a"), ["a"]);
    }

    #[test]
    fn deep_chain_does_not_overflow_the_stack() {
        let n = 4000;
        let names: Vec<String> = (0..n).map(|i| format!("g{i}")).collect();
        let mut map = BTreeMap::new();
        for i in 0..n {
            let name = GroupName::new(&names[i]).unwrap();
            let mut group = Group::new(name.clone());
            // g{i} contains g{i+1}; the last contains the first (one big cycle).
            group
                .members
                .insert(Member::group(&names[(i + 1) % n]).unwrap());
            map.insert(name, group);
        }
        let index = GroupIndex::build(&map);
        assert_eq!(index.cycles().len(), 1);
        assert_eq!(index.cycles()[0].len(), n);
        assert!(is_in(&index, "g0", "g3999") && is_in(&index, "g3999", "g0"));
        let path = index.path(index.id("g5").unwrap(), index.id("g0").unwrap());
        assert_eq!(path.len(), 6);
    }
}
