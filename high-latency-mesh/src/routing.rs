//! Routing decisions: which carried messages to hand to a peer met now, with how many copies,
//! and what the mesh learns from the meeting. Pure functions of (state, contact, time): no I/O,
//! no clock, no randomness, so the simulator (module `sim`, feature `sim`) and the real
//! transport run the same code.
//!
//! # Modes
//!
//! * [`Mode::Epidemic`] (flood): every message to every peer that lacks it; the sender keeps
//!   its copy. Best delivery and latency when bandwidth and storage are plentiful, and the most
//!   transmissions.
//! * [`Mode::SprayAndWait`] (binary Spray-and-Wait, Spyropoulos et al. 2005): a message starts
//!   with `copies`; a holder of `n > 1` copies hands `ceil(n/2)` to a peer that lacks the
//!   message and keeps `floor(n/2)`; a holder of one copy waits to meet the destination.
//! * [`Mode::Direct`]: only the source's copy, handed to the destination itself.
//! * [`Mode::Directed`]: binary spray of a few copies, then each single copy *focuses*: it is
//!   handed on (the sender deletes its copy) to a peer that met the destination markedly more
//!   recently than this node did — directly or, learned transitively, through the nodes it met
//!   since ([`Encounters`]; the seeds' "location information", Spray-and-Focus's
//!   last-encounter timers). A bounded number of focus hops per copy keeps transmissions low.
//!
//! In every mode a message goes first to its destination when the destination is the peer
//! (a *delivery*), and a peer is never offered what it holds or has had ([`Router::offers`]
//! takes what the peer said it has).
//!
//! # Time
//!
//! Times are milliseconds on the caller's clock (simulated or wall). Nothing here panics or
//! overflows for any input times, also when time goes backwards.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A destination as routing sees it: the 16 bytes of a [`DestTag`](crate::seal::DestTag).
pub type Tag = [u8; 16];

/// How a node routes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Mode {
    /// Flood: every message to every peer that lacks it.
    Epidemic,
    /// Binary Spray-and-Wait with this many copies per message.
    SprayAndWait {
        /// Copies a new message starts with (at least 1).
        copies: u16,
    },
    /// Source to destination only.
    Direct,
    /// Spray a few copies, then focus each one towards the destination (see the module docs).
    Directed(Directed),
}

/// The directed mode's parameters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Directed {
    /// Copies a new message starts with (binary spray while a holder has more than one).
    pub copies: u16,
    /// A single copy moves to a peer only if the peer's last encounter with the destination is
    /// at least this much more recent than ours (ms). Default 15 minutes.
    pub focus_gain_ms: u64,
    /// A single copy is handed on in the focus phase at most this many times. Default 2.
    pub max_focus_hops: u8,
    /// Transitive learning: a peer's encounter with D at `t` counts for us as an encounter at
    /// `t - transitive_penalty_ms` (the peer is near us now, not near D). Default 2 minutes.
    pub transitive_penalty_ms: u64,
    /// Half-life of a node's *activity* (its recent rate of encounters, decayed): spray splits
    /// copies in proportion to the two nodes' activities (Encounter-Based Routing's rule), so
    /// copies go to the nodes that meet others most. Default 20 minutes.
    pub activity_half_life_ms: u64,
}

impl Default for Directed {
    fn default() -> Directed {
        Directed {
            copies: 10,
            focus_gain_ms: 15 * 60_000,
            max_focus_hops: 2,
            transitive_penalty_ms: 2 * 60_000,
            activity_half_life_ms: 20 * 60_000,
        }
    }
}

impl Mode {
    /// Copies a message starts with in this mode (`u16::MAX` stands for "unlimited" in flood
    /// mode).
    pub fn initial_copies(&self) -> u16 {
        match self {
            Mode::Epidemic => u16::MAX,
            Mode::SprayAndWait { copies } => *copies,
            Mode::Direct => 1,
            Mode::Directed(d) => d.copies,
        }
    }

    /// Whether this node uses and spreads encounter history ([`Encounters`]).
    pub fn learns(&self) -> bool {
        matches!(self, Mode::Directed(_))
    }

    /// Checks the parameters.
    pub fn check(&self) -> Result<()> {
        let copies = match self {
            Mode::SprayAndWait { copies } => *copies,
            Mode::Directed(d) => d.copies,
            Mode::Epidemic | Mode::Direct => 1,
        };
        if copies == 0 {
            return Err(Error::InvalidConfig(
                "a message needs at least one copy".to_owned(),
            ));
        }
        Ok(())
    }

    /// A short name for reports (`epidemic`, `snw-10`, `direct`, `directed-6`).
    pub fn name(&self) -> String {
        match self {
            Mode::Epidemic => "epidemic".to_owned(),
            Mode::SprayAndWait { copies } => format!("snw-{copies}"),
            Mode::Direct => "direct".to_owned(),
            Mode::Directed(d) => format!("directed-{}", d.copies),
        }
    }
}

/// What routing needs to know of a message a node carries: its routing header and this
/// node's share of it. Relays see nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Who it is for.
    pub dest: Tag,
    /// Its size on the wire.
    pub size: u64,
    /// When it expires (ms).
    pub expires_ms: u64,
    /// Copies this node may still hand out (including its own).
    pub copies: u16,
    /// Times it was handed on in the focus phase of [`Mode::Directed`] so far.
    pub focus_hops: u8,
    /// Hops from the source to this node.
    pub hops: u8,
}

/// Why a message is offered to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The peer is the destination.
    Deliver,
    /// Flood mode.
    Flood,
    /// A share of the copies (Spray-and-Wait and directed modes).
    Spray,
    /// The single copy moves towards the destination (directed mode).
    Focus,
}

/// One message to hand to a peer, and the copy accounting that applies once it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// Index of the message in the slice given to [`Router::offers`].
    pub index: usize,
    /// Why.
    pub reason: Reason,
    /// Copies the receiver gets.
    pub give: u16,
    /// Copies the sender keeps (0: it deletes its copy once the transfer is done).
    pub keep: u16,
}

impl Offer {
    /// The receiver's [`Held`] for a message that arrived (hops counted, copies given).
    pub fn received(&self, sent: &Held) -> Held {
        Held {
            copies: self.give,
            hops: sent.hops.saturating_add(1),
            focus_hops: if self.reason == Reason::Focus {
                sent.focus_hops.saturating_add(1)
            } else {
                sent.focus_hops
            },
            ..*sent
        }
    }
}

/// What a peer told us when we met: who it is (as a destination) and, in the directed mode,
/// whom it has met and when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// The tags of which the peer is the destination (its own).
    pub tags: Vec<Tag>,
    /// When the peer last met each destination (ms), most recent first, bounded by the peer
    /// (see [`Encounters::summary`]).
    pub met: Vec<(Tag, u64)>,
    /// The peer's activity now (thousandths of an encounter, decayed; see
    /// [`Encounters::activity`]).
    pub activity: u64,
}

impl PeerView {
    fn is(&self, tag: &Tag) -> bool {
        self.tags.contains(tag)
    }

    fn met(&self, tag: &Tag) -> Option<u64> {
        self.met.iter().find(|(t, _)| t == tag).map(|&(_, at)| at)
    }
}

/// A node's routing: its mode and its learned encounter history.
#[derive(Debug, Clone)]
pub struct Router {
    mode: Mode,
    encounters: Encounters,
}

impl Router {
    /// A router in `mode`, remembering up to `capacity` destinations.
    pub fn new(mode: Mode, capacity: usize) -> Result<Router> {
        mode.check()?;
        Ok(Router {
            mode,
            encounters: Encounters::new(capacity),
        })
    }

    /// The mode.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The learned encounter history.
    pub fn encounters(&self) -> &Encounters {
        &self.encounters
    }

    /// The [`Held`] of a message this node creates now.
    pub fn created(&self, dest: Tag, size: u64, expires_ms: u64) -> Held {
        Held {
            dest,
            size,
            expires_ms,
            copies: self.mode.initial_copies(),
            focus_hops: 0,
            hops: 0,
        }
    }

    /// What this node tells a peer it meets: its own tags, its `limit` most recent encounters
    /// and its activity (the last two in the directed mode only).
    pub fn view(&self, tags: Vec<Tag>, limit: usize, now_ms: u64) -> PeerView {
        if !self.mode.learns() {
            return PeerView {
                tags,
                ..PeerView::default()
            };
        }
        PeerView {
            tags,
            met: self.encounters.summary(limit),
            activity: self.encounters.activity(now_ms, self.half_life()),
        }
    }

    /// This node's activity now (see [`Encounters::activity`]; 0 outside the directed mode).
    pub fn activity(&self, now_ms: u64) -> u64 {
        self.encounters.activity(now_ms, self.half_life())
    }

    fn half_life(&self) -> u64 {
        match &self.mode {
            Mode::Directed(d) => d.activity_half_life_ms,
            _ => 0,
        }
    }

    /// Learns from a meeting at `now_ms` (call once per contact, before [`offers`](Self::offers)).
    pub fn met(&mut self, peer: &PeerView, now_ms: u64) {
        if !self.mode.learns() {
            return;
        }
        let half_life = self.half_life();
        self.encounters.bump(now_ms, half_life);
        for tag in &peer.tags {
            self.encounters.record(*tag, now_ms);
        }
        let penalty = match &self.mode {
            Mode::Directed(d) => d.transitive_penalty_ms,
            _ => 0,
        };
        for (tag, at) in &peer.met {
            if peer.is(tag) {
                continue;
            }
            let at = (*at).min(now_ms).saturating_sub(penalty);
            self.encounters.learn(*tag, at);
        }
    }

    /// What to hand to `peer` now, deliveries first, then in the order of `messages` (the
    /// caller's queue order). `peer_has(i)` says whether the peer holds or has had
    /// `messages[i]` (from its summary); such messages and expired ones are never offered.
    pub fn offers(
        &self,
        messages: &[Held],
        peer: &PeerView,
        peer_has: impl Fn(usize) -> bool,
        now_ms: u64,
    ) -> Vec<Offer> {
        let mut deliver = Vec::new();
        let mut other = Vec::new();
        for (index, m) in messages.iter().enumerate() {
            if m.expires_ms <= now_ms || m.copies == 0 || peer_has(index) {
                continue;
            }
            if peer.is(&m.dest) {
                deliver.push(Offer {
                    index,
                    reason: Reason::Deliver,
                    give: 1,
                    keep: self.kept_after_delivery(m),
                });
                continue;
            }
            if let Some(offer) = self.relay(index, m, peer, now_ms) {
                other.push(offer);
            }
        }
        deliver.extend(other);
        deliver
    }

    fn kept_after_delivery(&self, m: &Held) -> u16 {
        match self.mode {
            // Flood keeps its copy (as The ONE's epidemic router: receipts clear it later).
            Mode::Epidemic => m.copies,
            // The ONE's Spray-and-Wait halves the copies on every finished transfer,
            // deliveries included.
            Mode::SprayAndWait { .. } | Mode::Directed(_) => m.copies / 2,
            Mode::Direct => 0,
        }
    }

    /// Copies split in proportion to the two activities (an even split when neither met
    /// anybody lately); the sender keeps at least one.
    fn weighted_spray(
        &self,
        index: usize,
        m: &Held,
        peer: &PeerView,
        now_ms: u64,
    ) -> Option<Offer> {
        let ours = u128::from(self.encounters.activity(now_ms, self.half_life()));
        let theirs = u128::from(peer.activity);
        let copies = u128::from(m.copies);
        let total = ours + theirs;
        let give = (copies * theirs + total / 2)
            .checked_div(total)
            .unwrap_or(copies.div_ceil(2));
        let give = u16::try_from(give.min(copies - 1)).unwrap_or(0);
        (give > 0).then_some(Offer {
            index,
            reason: Reason::Spray,
            give,
            keep: m.copies - give,
        })
    }

    fn relay(&self, index: usize, m: &Held, peer: &PeerView, now_ms: u64) -> Option<Offer> {
        match &self.mode {
            Mode::Epidemic => Some(Offer {
                index,
                reason: Reason::Flood,
                give: u16::MAX,
                keep: m.copies,
            }),
            Mode::Direct => None,
            Mode::SprayAndWait { .. } => spray(index, m),
            Mode::Directed(d) => {
                if m.copies > 1 {
                    return self.weighted_spray(index, m, peer, now_ms);
                }
                if m.focus_hops >= d.max_focus_hops {
                    return None;
                }
                let theirs = peer.met(&m.dest)?;
                let ours = self.encounters.last(&m.dest);
                let better = match ours {
                    None => true,
                    Some(ours) => theirs >= ours.saturating_add(d.focus_gain_ms),
                };
                better.then_some(Offer {
                    index,
                    reason: Reason::Focus,
                    give: 1,
                    keep: 0,
                })
            }
        }
    }
}

fn spray(index: usize, m: &Held) -> Option<Offer> {
    (m.copies > 1).then(|| Offer {
        index,
        reason: Reason::Spray,
        give: m.copies.div_ceil(2),
        keep: m.copies / 2,
    })
}

/// When this node last met each destination, directly or learned through the nodes it met:
/// the directed mode's "location information". Bounded: past `capacity` destinations the
/// oldest encounters are forgotten.
#[derive(Debug, Clone, Default)]
pub struct Encounters {
    capacity: usize,
    last: BTreeMap<Tag, u64>,
    /// Decayed count of direct encounters (thousandths) as of `activity_at`.
    activity: u64,
    activity_at: u64,
}

impl Encounters {
    /// An empty history of at most `capacity` destinations.
    pub fn new(capacity: usize) -> Encounters {
        Encounters {
            capacity,
            last: BTreeMap::new(),
            activity: 0,
            activity_at: 0,
        }
    }

    /// The node's activity at `now_ms`: its direct encounters, each counting 1000 when it
    /// happens and halving every `half_life_ms` after (integer arithmetic: between two
    /// halvings the decay is linear, so every platform computes the same value).
    pub fn activity(&self, now_ms: u64, half_life_ms: u64) -> u64 {
        decay(
            self.activity,
            now_ms.saturating_sub(self.activity_at),
            half_life_ms,
        )
    }

    /// One more direct encounter at `now_ms`.
    pub fn bump(&mut self, now_ms: u64, half_life_ms: u64) {
        self.activity = self.activity(now_ms, half_life_ms).saturating_add(1000);
        self.activity_at = self.activity_at.max(now_ms);
    }

    /// When this node last met `tag` (directly or transitively), if it knows.
    pub fn last(&self, tag: &Tag) -> Option<u64> {
        self.last.get(tag).copied()
    }

    /// How many destinations it remembers.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// A direct encounter with `tag` at `at`.
    pub fn record(&mut self, tag: Tag, at: u64) {
        self.learn(tag, at);
    }

    /// An encounter learned second-hand: kept if more recent than what we know.
    pub fn learn(&mut self, tag: Tag, at: u64) {
        match self.last.get_mut(&tag) {
            Some(known) => *known = (*known).max(at),
            None => {
                if self.capacity == 0 {
                    return;
                }
                if self.last.len() >= self.capacity {
                    let oldest = self.last.iter().min_by_key(|&(t, at)| (*at, *t));
                    let Some((&oldest_tag, &oldest_at)) = oldest else {
                        return;
                    };
                    if oldest_at >= at {
                        return;
                    }
                    self.last.remove(&oldest_tag);
                }
                self.last.insert(tag, at);
            }
        }
    }

    /// The `limit` most recent encounters, most recent first: what this node tells a peer.
    pub fn summary(&self, limit: usize) -> Vec<(Tag, u64)> {
        let mut all: Vec<(Tag, u64)> = self.last.iter().map(|(t, at)| (*t, *at)).collect();
        let order = |a: &(Tag, u64), b: &(Tag, u64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
        if limit == 0 {
            return Vec::new();
        }
        if all.len() > limit {
            // The `limit` most recent first (linear), then only those sorted.
            all.select_nth_unstable_by(limit - 1, order);
            all.truncate(limit);
        }
        all.sort_unstable_by(order);
        all
    }
}

/// `value` halved every `half_life` over `elapsed` (linear between halvings; 0 half-life: no
/// memory).
fn decay(value: u64, elapsed: u64, half_life: u64) -> u64 {
    if half_life == 0 {
        return 0;
    }
    let halvings = elapsed / half_life;
    if halvings >= 64 {
        return 0;
    }
    let v = value >> halvings;
    let rest = u128::from(elapsed % half_life);
    let cut = u128::from(v) * rest / (2 * u128::from(half_life));
    v - u64::try_from(cut).unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(n: u8) -> Tag {
        [n; 16]
    }

    fn held(dest: u8, copies: u16) -> Held {
        Held {
            dest: tag(dest),
            size: 1000,
            expires_ms: 10_000_000,
            copies,
            focus_hops: 0,
            hops: 0,
        }
    }

    fn peer(n: u8) -> PeerView {
        PeerView {
            tags: vec![tag(n)],
            ..PeerView::default()
        }
    }

    #[test]
    fn deliveries_come_first_and_known_or_expired_messages_are_never_offered() {
        let r = Router::new(Mode::Epidemic, 16).unwrap();
        let mut expired = held(3, 1);
        expired.expires_ms = 10;
        let msgs = [held(3, 1), held(2, 1), expired, held(4, 1)];
        let offers = r.offers(&msgs, &peer(2), |i| i == 3, 100);
        let got: Vec<(usize, Reason)> = offers.iter().map(|o| (o.index, o.reason)).collect();
        assert_eq!(got, vec![(1, Reason::Deliver), (0, Reason::Flood)]);
    }

    #[test]
    fn binary_spray_halves_as_the_one_does() {
        let r = Router::new(Mode::SprayAndWait { copies: 10 }, 16).unwrap();
        let offers = r.offers(
            &[held(9, 10), held(9, 1), held(9, 3)],
            &peer(2),
            |_| false,
            0,
        );
        assert_eq!(offers.len(), 2);
        assert_eq!((offers[0].give, offers[0].keep), (5, 5));
        assert_eq!((offers[1].give, offers[1].keep), (2, 1));
        let got = offers[1].received(&held(9, 3));
        assert_eq!((got.copies, got.hops), (2, 1));
        // Delivery halves too (The ONE's transferDone), direct keeps nothing.
        let d = r.offers(&[held(2, 5)], &peer(2), |_| false, 0);
        assert_eq!((d[0].reason, d[0].keep), (Reason::Deliver, 2));
        let direct = Router::new(Mode::Direct, 16).unwrap();
        assert!(
            direct
                .offers(&[held(9, 1)], &peer(2), |_| false, 0)
                .is_empty()
        );
        assert_eq!(
            direct.offers(&[held(2, 1)], &peer(2), |_| false, 0)[0].keep,
            0
        );
    }

    #[test]
    fn a_single_copy_focuses_only_towards_a_markedly_fresher_encounter() {
        let d = Directed::default();
        let gain = d.focus_gain_ms;
        let mut r = Router::new(Mode::Directed(d), 16).unwrap();
        r.met(&peer(9), 1_000_000); // we met the destination at t = 1e6
        let fresher = PeerView {
            tags: vec![tag(2)],
            met: vec![(tag(9), 1_000_000 + gain)],
            activity: 0,
        };
        let barely = PeerView {
            tags: vec![tag(2)],
            met: vec![(tag(9), 1_000_000 + gain - 1)],
            activity: 0,
        };
        let single = [held(9, 1)];
        let offers = r.offers(&single, &fresher, |_| false, 2_000_000);
        assert_eq!(offers.len(), 1);
        assert_eq!(
            (offers[0].reason, offers[0].give, offers[0].keep),
            (Reason::Focus, 1, 0)
        );
        assert!(r.offers(&single, &barely, |_| false, 2_000_000).is_empty());
        // A peer that never met the destination gets nothing; the hop bound holds.
        assert!(r.offers(&single, &peer(2), |_| false, 2_000_000).is_empty());
        let mut tired = held(9, 1);
        tired.focus_hops = Directed::default().max_focus_hops;
        assert!(
            r.offers(&[tired], &fresher, |_| false, 2_000_000)
                .is_empty()
        );
    }

    #[test]
    fn encounters_learn_transitively_with_a_penalty_and_stay_bounded() {
        let mut r = Router::new(Mode::Directed(Directed::default()), 2).unwrap();
        let view = PeerView {
            tags: vec![tag(1)],
            met: vec![(tag(7), 500_000), (tag(1), 1), (tag(8), u64::MAX)],
            activity: 0,
        };
        r.met(&view, 600_000);
        let e = r.encounters();
        assert_eq!(e.last(&tag(1)), Some(600_000));
        // Capacity 2: the most recent two of {1@600000, 7@380000, 8@480000} stay.
        assert_eq!(e.len(), 2);
        assert_eq!(e.last(&tag(8)), Some(600_000 - 120_000)); // future times clamp to now
        assert_eq!(e.last(&tag(7)), None);
        assert_eq!(e.summary(1), vec![(tag(1), 600_000)]);
        // Flood mode learns nothing.
        let mut flood = Router::new(Mode::Epidemic, 2).unwrap();
        flood.met(&view, 600_000);
        assert!(flood.encounters().is_empty());
    }

    #[test]
    fn directed_spray_splits_copies_by_activity_and_activity_decays() {
        let d = Directed::default();
        let half = d.activity_half_life_ms;
        let mut r = Router::new(Mode::Directed(d), 16).unwrap();
        let busy = |activity| PeerView {
            tags: vec![tag(2)],
            activity,
            ..PeerView::default()
        };
        let ten = [held(9, 10)];
        // Neither met anybody: an even split, as binary Spray-and-Wait.
        let o = r.offers(&ten, &busy(0), |_| false, 0);
        assert_eq!((o[0].reason, o[0].give, o[0].keep), (Reason::Spray, 5, 5));
        // We met one node just now; a peer that met four gets 4/5 of the copies.
        r.met(&peer(3), 0);
        assert_eq!(r.encounters().activity(0, half), 1000);
        let o = r.offers(&ten, &busy(4000), |_| false, 0);
        assert_eq!((o[0].give, o[0].keep), (8, 2));
        // We always keep one; a much less active peer may get none.
        let o = r.offers(&ten, &busy(1_000_000), |_| false, 0);
        assert_eq!((o[0].give, o[0].keep), (9, 1));
        assert!(r.offers(&ten, &busy(10), |_| false, 0).is_empty());
        // Activity halves every half-life (linearly in between), and never underflows.
        assert_eq!(r.encounters().activity(half, half), 500);
        assert_eq!(r.encounters().activity(half + half / 2, half), 375);
        assert_eq!(r.encounters().activity(u64::MAX, half), 0);
        assert_eq!(decay(u64::MAX, u64::MAX, 1), 0);
        assert_eq!(decay(1000, 5, 0), 0);
    }

    #[test]
    fn a_summary_is_the_most_recent_encounters_in_order() {
        let mut e = Encounters::new(100);
        for i in 0..60u8 {
            // Times repeat, so ties are ordered by tag.
            e.learn(tag(i), u64::from(i % 7) * 1000);
        }
        let mut naive: Vec<(Tag, u64)> = (0..60u8)
            .map(|i| (tag(i), u64::from(i % 7) * 1000))
            .collect();
        naive.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for limit in [0, 1, 5, 9, 59, 60, 61, 500] {
            let want: Vec<(Tag, u64)> = naive.iter().take(limit).copied().collect();
            assert_eq!(e.summary(limit), want, "limit {limit}");
        }
    }

    #[test]
    fn zero_copies_is_refused() {
        assert!(Router::new(Mode::SprayAndWait { copies: 0 }, 1).is_err());
        assert_eq!(Mode::SprayAndWait { copies: 10 }.name(), "snw-10");
    }
}
