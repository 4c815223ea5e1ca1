//! Streams: opening (one round trip), buffers and windows, FIN, breaking with the contact.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::task::{Context, Poll, Waker};

use tokio::io::ReadBuf;
use tokio::sync::mpsc;

use super::radio::Dir;
use super::{Action, Engine, Pair, TAG_BROKEN, TAG_OPENED, TAG_REFUSED, TAG_SEGMENT, dir_of, pair};
use crate::error::{Error, Result};
use crate::link::Inbound;
use crate::peer::{Address, Transport};
use crate::sim::io::SimStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Not handed out yet (the acceptor, before the open arrives).
    Waiting,
    /// A handle exists.
    Open,
    /// Its handle was dropped.
    Gone,
}

#[derive(Default)]
pub(super) struct Half {
    send_buf: VecDeque<u8>,
    fin_requested: bool,
    fin_sent: bool,
    in_flight: usize,
    recv_buf: VecDeque<u8>,
    fin_received: bool,
    writer: Option<Waker>,
    reader: Option<Waker>,
}

pub(super) struct StreamState {
    /// The opener (end 0) and the acceptor (end 1).
    nodes: [u32; 2],
    epoch: u64,
    accepted: bool,
    refused: Option<&'static str>,
    broken: bool,
    /// `half[h]` carries bytes from end `h` to end `1 - h`.
    half: [Half; 2],
    ends: [End; 2],
    opener: Option<Waker>,
}

impl StreamState {
    fn pair(&self) -> Pair {
        pair(self.nodes[0], self.nodes[1])
    }

    /// The half that `from` sends on.
    fn half_from(&self, from: u32) -> usize {
        usize::from(self.nodes[0] != from)
    }

    fn dead(&self) -> bool {
        self.broken || self.refused.is_some()
    }
}

impl Engine {
    pub(super) fn streams_of(&self, node: u32) -> usize {
        self.streams
            .values()
            .filter(|s| !s.dead() && s.nodes.contains(&node))
            .count()
    }

    pub(crate) fn open_stream(&mut self, from: u32, to: u32) -> Result<u64> {
        let p = self.target(from, to)?;
        if self.streams_of(from) >= self.config.max_streams {
            return Err(Error::Unreachable(format!(
                "sim:{from} has {} streams open already",
                self.config.max_streams
            )));
        }
        let Some(c) = self.contacts.get_mut(&p) else {
            return Err(Error::Unreachable(format!("sim:{to} is not in range")));
        };
        self.next_stream += 1;
        let id = self.next_stream;
        c.streams.insert(id);
        let (epoch, latency) = (c.epoch, c.link.latency);
        self.streams.insert(
            id,
            StreamState {
                nodes: [from, to],
                epoch,
                accepted: false,
                refused: None,
                broken: false,
                half: [Half::default(), Half::default()],
                ends: [End::Open, End::Waiting],
                opener: None,
            },
        );
        self.schedule(self.now + latency, Action::Syn(id));
        Ok(id)
    }

    pub(super) fn syn(&mut self, id: u64) {
        let full = |e: &Engine, node: u32| e.streams_of(node) > e.config.max_streams;
        let Some(st) = self.streams.get(&id) else {
            return;
        };
        if st.dead() {
            return;
        }
        let [a, b] = st.nodes;
        let Some(latency) = self
            .contacts
            .get(&st.pair())
            .filter(|c| c.epoch == st.epoch)
            .map(|c| c.link.latency)
        else {
            return;
        };
        let stream = self
            .me
            .upgrade()
            .map(|shared| SimStream::new(shared, id, 1, a));
        let (Some(stream), false) = (stream, full(self, b)) else {
            self.schedule(self.now + latency, Action::Refused(id));
            return;
        };
        if let Some(st) = self.streams.get_mut(&id) {
            st.ends[1] = End::Open;
        }
        let inbound = Inbound::Stream {
            transport: Transport::Sim,
            from: Address::Sim(a),
            stream: Box::new(stream),
        };
        let sent = match self.nodes.get(b as usize) {
            Some(node) => node.tx.try_send(inbound).map_err(|e| match e {
                mpsc::error::TrySendError::Full(v) | mpsc::error::TrySendError::Closed(v) => v,
            }),
            None => Err(inbound),
        };
        match sent {
            Ok(()) => self.schedule(self.now + latency, Action::Accepted(id)),
            Err(inbound) => {
                // Its drop (after the lock is released) marks the end gone.
                self.graveyard.push(inbound);
                self.schedule(self.now + latency, Action::Refused(id));
            }
        }
    }

    pub(super) fn accepted(&mut self, id: u64) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.dead() {
            return;
        }
        st.accepted = true;
        if let Some(w) = st.opener.take() {
            self.wake.push(w);
        }
        let [a, b] = st.nodes;
        self.stats.streams_opened += 1;
        self.note(&[TAG_OPENED, u64::from(a), u64::from(b)]);
    }

    pub(super) fn refused(&mut self, id: u64) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.dead() {
            return;
        }
        st.refused = Some("refused");
        if let Some(w) = st.opener.take() {
            self.wake.push(w);
        }
        let [a, b] = st.nodes;
        self.stats.streams_refused += 1;
        self.note(&[TAG_REFUSED, u64::from(a), u64::from(b)]);
        self.maybe_remove(id);
    }

    pub(crate) fn poll_open(&mut self, id: u64, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(st) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(Error::Closed));
        };
        let to = st.nodes[1];
        if st.broken {
            return Poll::Ready(Err(Error::Unreachable(format!(
                "the contact with sim:{to} ended"
            ))));
        }
        if let Some(why) = st.refused {
            return Poll::Ready(Err(Error::Unreachable(format!("sim:{to}: {why}"))));
        }
        if st.accepted {
            return Poll::Ready(Ok(()));
        }
        st.opener = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(super) fn break_stream(&mut self, id: u64) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.dead() {
            return;
        }
        if st.accepted {
            st.broken = true;
            self.stats.streams_broken += 1;
        } else {
            st.refused = Some("the contact ended while opening");
            self.stats.streams_refused += 1;
        }
        for half in &mut st.half {
            half.send_buf.clear();
            half.in_flight = 0;
            self.wake.extend(half.writer.take());
            self.wake.extend(half.reader.take());
        }
        self.wake.extend(st.opener.take());
        let [a, b] = st.nodes;
        self.note(&[TAG_BROKEN, u64::from(a), u64::from(b)]);
        self.maybe_remove(id);
    }

    /// Forgets a stream no handle can reach any more.
    pub(super) fn maybe_remove(&mut self, id: u64) {
        let Some(st) = self.streams.get(&id) else {
            return;
        };
        let held = st.ends.contains(&End::Open);
        let may_be_handed_out = st.ends[1] == End::Waiting && !st.dead();
        if held || may_be_handed_out {
            return;
        }
        let (p, epoch) = (st.pair(), st.epoch);
        self.streams.remove(&id);
        if let Some(c) = self.contacts.get_mut(&p).filter(|c| c.epoch == epoch) {
            c.streams.remove(&id);
            for dir in &mut c.dirs {
                dir.active.remove(&id);
            }
        }
    }

    /// Marks `id`'s half `h` as having something to send, and starts it if the radio is free.
    pub(super) fn activate(&mut self, id: u64, h: usize) {
        let Some(st) = self.streams.get(&id) else {
            return;
        };
        let (from, to) = if h == 0 {
            (st.nodes[0], st.nodes[1])
        } else {
            (st.nodes[1], st.nodes[0])
        };
        let (p, epoch) = (st.pair(), st.epoch);
        if let Some(dir) = self
            .contacts
            .get_mut(&p)
            .filter(|c| c.epoch == epoch)
            .and_then(|c| c.dirs.get_mut(dir_of(from, to)))
        {
            dir.active.insert(id);
            self.kick_pair(p);
        }
    }

    pub(super) fn deliver_segment(&mut self, id: u64, from: u32, data: Vec<u8>, fin: bool) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if st.broken {
            return;
        }
        let h = st.half_from(from);
        let reader_gone = st.ends.get(1 - h) == Some(&End::Gone);
        let len = data.len();
        let Some(half) = st.half.get_mut(h) else {
            return;
        };
        half.in_flight = half.in_flight.saturating_sub(len);
        if !reader_gone {
            half.recv_buf.extend(data);
        }
        if fin {
            half.fin_received = true;
        }
        self.wake.extend(half.reader.take());
        let waiting = !half.send_buf.is_empty();
        self.stats.stream_bytes += len as u64;
        self.note(&[TAG_SEGMENT, u64::from(from), len as u64, u64::from(fin)]);
        if reader_gone && waiting {
            self.activate(id, h);
        }
    }

    pub(crate) fn stream_read(
        &mut self,
        id: u64,
        side: usize,
        buf: &mut ReadBuf<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(st) = self.streams.get_mut(&id) else {
            return Poll::Ready(Ok(()));
        };
        let broken = st.broken;
        let Some(half) = st.half.get_mut(1 - side.min(1)) else {
            return Poll::Ready(Ok(()));
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !half.recv_buf.is_empty() {
            let n = buf.remaining().min(half.recv_buf.len());
            let (front, back) = half.recv_buf.as_slices();
            let first = n.min(front.len());
            buf.put_slice(front.get(..first).unwrap_or_default());
            if n > first {
                buf.put_slice(back.get(..n - first).unwrap_or_default());
            }
            half.recv_buf.drain(..n);
            // The window opened: the sender may go on.
            if !half.send_buf.is_empty() && !broken {
                self.activate(id, 1 - side.min(1));
            }
            return Poll::Ready(Ok(()));
        }
        if half.fin_received {
            return Poll::Ready(Ok(()));
        }
        if broken {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the simulated contact ended",
            )));
        }
        half.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn stream_write(
        &mut self,
        id: u64,
        side: usize,
        data: &[u8],
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let capacity = self.config.send_buffer;
        let Some(st) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if st.dead() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the simulated contact ended",
            )));
        }
        let Some(half) = st.half.get_mut(side) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if half.fin_requested {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let space = capacity.saturating_sub(half.send_buf.len());
        if space == 0 {
            half.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(data.len());
        half.send_buf.extend(data.get(..n).unwrap_or_default());
        self.activate(id, side);
        Poll::Ready(Ok(n))
    }

    pub(crate) fn stream_flush(&mut self, id: u64) -> io::Result<()> {
        match self.streams.get(&id) {
            Some(st) if st.broken => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the simulated contact ended",
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn stream_shutdown(&mut self, id: u64, side: usize) {
        let Some(half) = self
            .streams
            .get_mut(&id)
            .and_then(|st| st.half.get_mut(side))
        else {
            return;
        };
        if !half.fin_requested {
            half.fin_requested = true;
            self.activate(id, side);
        }
    }

    pub(crate) fn stream_drop(&mut self, id: u64, side: usize) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        if side == 0 && !st.accepted && !st.dead() {
            st.refused = Some("cancelled");
        }
        if let Some(end) = st.ends.get_mut(side) {
            *end = End::Gone;
        }
        if let Some(theirs) = st.half.get_mut(1 - side.min(1)) {
            theirs.recv_buf.clear();
            theirs.reader = None;
        }
        let peer_waiting = st
            .half
            .get(1 - side.min(1))
            .is_some_and(|h| !h.send_buf.is_empty());
        self.stream_shutdown(id, side);
        if peer_waiting {
            self.activate(id, 1 - side.min(1));
        }
        self.maybe_remove(id);
    }
}

/// The next stream segment to send in `dir` (round robin over its streams), within the
/// receiver's window.
pub(super) fn next_segment(
    streams: &mut BTreeMap<u64, StreamState>,
    dir: &mut Dir,
    from: u32,
    mtu: usize,
    window: usize,
    wake: &mut Vec<Waker>,
) -> Option<(u64, Vec<u8>, bool)> {
    if dir.active.is_empty() {
        return None;
    }
    let order: Vec<u64> = dir
        .active
        .range(dir.cursor.saturating_add(1)..)
        .chain(dir.active.range(..=dir.cursor))
        .copied()
        .collect();
    for id in order {
        let Some(st) = streams.get_mut(&id).filter(|s| !s.dead()) else {
            dir.active.remove(&id);
            continue;
        };
        let h = st.half_from(from);
        let Some(half) = st.half.get_mut(h) else {
            continue;
        };
        if !half.send_buf.is_empty() {
            let credit = window.saturating_sub(half.in_flight + half.recv_buf.len());
            if credit == 0 {
                continue;
            }
            let n = mtu.min(half.send_buf.len()).min(credit);
            let data: Vec<u8> = half.send_buf.drain(..n).collect();
            let fin = half.send_buf.is_empty() && half.fin_requested && !half.fin_sent;
            half.fin_sent |= fin;
            half.in_flight += n;
            wake.extend(half.writer.take());
            if half.send_buf.is_empty() && (!half.fin_requested || half.fin_sent) {
                dir.active.remove(&id);
            }
            dir.cursor = id;
            return Some((id, data, fin));
        }
        if half.fin_requested && !half.fin_sent {
            half.fin_sent = true;
            dir.active.remove(&id);
            dir.cursor = id;
            return Some((id, Vec::new(), true));
        }
        dir.active.remove(&id);
    }
    None
}
