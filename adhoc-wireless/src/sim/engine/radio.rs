//! The radios: per-direction queues, air time, half-duplex arbitration, loss, delivery.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::streams::next_segment;
use super::{
    Action, Engine, Pair, TAG_ABORTED, TAG_MESSAGE, TAG_MESSAGE_DROPPED, TAG_MESSAGE_LOST,
    TAG_TRANSFER, dir_of, ends_of, pair,
};
use crate::error::{Error, Result};
use crate::link::Inbound;
use crate::peer::{Address, Transport};
use crate::sim::events::{SimEvent, TransferId};
use crate::sim::rng::Rng;

pub(super) enum Frame {
    Message {
        bytes: Vec<u8>,
        lost: bool,
    },
    Segment {
        stream: u64,
        data: Vec<u8>,
        fin: bool,
        failed: bool,
    },
    Transfer {
        id: u64,
        bytes: u64,
        failed: bool,
    },
}

impl Frame {
    pub(super) fn len(&self) -> u64 {
        match self {
            Frame::Message { bytes, .. } => bytes.len() as u64,
            Frame::Segment { data, .. } => data.len() as u64,
            Frame::Transfer { bytes, .. } => *bytes,
        }
    }
}

#[derive(Default)]
pub(super) struct Dir {
    pub(super) busy: bool,
    pub(super) messages: VecDeque<Vec<u8>>,
    pub(super) transfers: VecDeque<(u64, u64)>,
    pub(super) sending: BTreeMap<u64, u64>,
    pub(super) active: BTreeSet<u64>,
    pub(super) cursor: u64,
    pub(super) sent: u64,
}

impl Engine {
    pub(super) fn target(&self, from: u32, to: u32) -> Result<Pair> {
        if from == to {
            return Err(Error::WrongAddress(format!("sim:{from} is this node")));
        }
        if to >= self.node_count() {
            return Err(Error::Unreachable(format!("sim:{to} does not exist")));
        }
        let p = pair(from, to);
        if !self.contacts.contains_key(&p) {
            return Err(Error::Unreachable(format!(
                "sim:{to} is not in range of sim:{from}"
            )));
        }
        Ok(p)
    }

    pub(crate) fn send_message(&mut self, from: u32, to: u32, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.config.max_message_bytes {
            return Err(Error::TooLarge {
                what: "message",
                size: bytes.len(),
                limit: self.config.max_message_bytes,
            });
        }
        let p = self.target(from, to)?;
        let limit = self.config.queue_limit;
        let Some(c) = self.contacts.get_mut(&p) else {
            return Err(Error::Unreachable(format!("sim:{to} is not in range")));
        };
        let Some(dir) = c.dirs.get_mut(dir_of(from, to)) else {
            return Err(Error::Unreachable(format!("sim:{to} is not in range")));
        };
        if dir.messages.len() + dir.transfers.len() >= limit {
            return Err(Error::Unreachable(format!(
                "the queue to sim:{to} is full ({limit} waiting)"
            )));
        }
        dir.messages.push_back(bytes.to_vec());
        self.stats.messages_sent += 1;
        self.kick_pair(p);
        Ok(())
    }

    pub(crate) fn start_transfer(&mut self, from: u32, to: u32, bytes: u64) -> Result<TransferId> {
        let p = self.target(from, to)?;
        let limit = self.config.queue_limit;
        self.next_transfer += 1;
        let id = self.next_transfer;
        let Some(dir) = self
            .contacts
            .get_mut(&p)
            .and_then(|c| c.dirs.get_mut(dir_of(from, to)))
        else {
            return Err(Error::Unreachable(format!("sim:{to} is not in range")));
        };
        if dir.messages.len() + dir.transfers.len() >= limit {
            return Err(Error::Unreachable(format!(
                "the queue to sim:{to} is full ({limit} waiting)"
            )));
        }
        dir.transfers.push_back((id, bytes));
        self.kick_pair(p);
        Ok(TransferId(id))
    }

    /// Whether `node`'s radio is sending or receiving now (half duplex: busy with anything;
    /// full duplex: sending on any of its contacts, or receiving on any).
    pub(crate) fn busy(&self, node: u32) -> bool {
        if self.config.half_duplex {
            return self
                .nodes
                .get(node as usize)
                .is_some_and(|n| n.radio.is_some());
        }
        self.nodes.get(node as usize).is_some_and(|n| {
            n.neighbours.iter().any(|y| {
                self.contacts
                    .get(&pair(node, *y))
                    .is_some_and(|c| c.dirs.iter().any(|d| d.busy))
            })
        })
    }

    pub(super) fn abort_transfer(&mut self, id: u64, from: u32, to: u32, bytes: u64) {
        self.stats.transfers_aborted += 1;
        self.note(&[TAG_ABORTED, id, u64::from(from), u64::from(to)]);
        self.emit(SimEvent::TransferAborted {
            at: self.now,
            id: TransferId(id),
            from,
            to,
            bytes,
        });
    }

    /// Starts what can start on contact `p`: the direction that went last goes second.
    pub(super) fn kick_pair(&mut self, p: Pair) {
        let Some(last) = self.contacts.get(&p).map(|c| c.last) else {
            return;
        };
        let first = 1 - last.min(1);
        for d in [first, 1 - first] {
            let (from, to) = ends_of(p, d);
            if self.config.half_duplex {
                let busy = |n: u32| {
                    self.nodes
                        .get(n as usize)
                        .is_none_or(|node| node.radio.is_some())
                };
                if busy(from) || busy(to) {
                    return;
                }
            } else if self
                .contacts
                .get(&p)
                .and_then(|c| c.dirs.get(d))
                .is_none_or(|dir| dir.busy)
            {
                continue;
            }
            self.start_frame(p, d);
        }
    }

    /// Half duplex: `n`'s radio may be free; offer it to its contacts in turn.
    pub(super) fn kick_node(&mut self, n: u32) {
        let Some(node) = self.nodes.get_mut(n as usize) else {
            return;
        };
        let k = node.neighbours.len();
        if k == 0 {
            return;
        }
        let start = node.rr % k;
        node.rr = start + 1;
        let neighbours = node.neighbours.clone();
        for i in 0..k {
            if self
                .nodes
                .get(n as usize)
                .is_none_or(|node| node.radio.is_some())
            {
                break;
            }
            if let Some(y) = neighbours.get((start + i) % k) {
                self.kick_pair(pair(n, *y));
            }
        }
    }

    pub(super) fn start_frame(&mut self, p: Pair, d: usize) -> bool {
        let (from, to) = ends_of(p, d);
        let (mtu, retries, window) = (
            self.config.mtu,
            self.config.max_retries,
            self.config.stream_window,
        );
        let Some(c) = self.contacts.get_mut(&p) else {
            return false;
        };
        let Some(dir) = c.dirs.get_mut(d) else {
            return false;
        };
        let loss = c.link.loss;
        let (frame, on_air, repeats) = if let Some(bytes) = dir.messages.pop_front() {
            let lost = self.loss.chance(loss);
            let len = bytes.len() as u64;
            (Frame::Message { bytes, lost }, len, 0)
        } else if let Some((id, bytes)) = dir.transfers.pop_front() {
            dir.sending.insert(id, bytes);
            let mut repeats = 0u64;
            let mut on_air = bytes;
            let mut failed = false;
            if loss > 0.0 {
                let mut left = bytes;
                loop {
                    let chunk = left.min(mtu as u64);
                    match attempts(&mut self.loss, loss, retries) {
                        Some(k) => {
                            repeats += u64::from(k);
                            on_air = on_air.saturating_add(chunk * u64::from(k));
                        }
                        None => {
                            repeats += u64::from(retries);
                            on_air = on_air.saturating_add(chunk * u64::from(retries));
                            failed = true;
                            break;
                        }
                    }
                    left -= chunk;
                    if left == 0 {
                        break;
                    }
                }
            }
            (Frame::Transfer { id, bytes, failed }, on_air, repeats)
        } else if let Some((stream, data, fin)) =
            next_segment(&mut self.streams, dir, from, mtu, window, &mut self.wake)
        {
            let len = data.len() as u64;
            let (failed, k) = match attempts(&mut self.loss, loss, retries) {
                Some(k) => (false, k),
                None => (true, retries),
            };
            let frame = Frame::Segment {
                stream,
                data,
                fin,
                failed,
            };
            (frame, len.saturating_mul(1 + u64::from(k)), u64::from(k))
        } else {
            return false;
        };
        let airtime = c.link.airtime_micros(on_air);
        let epoch = c.epoch;
        c.last = d;
        if self.config.half_duplex {
            for (n, other) in [(from, to), (to, from)] {
                if let Some(node) = self.nodes.get_mut(n as usize) {
                    node.radio = Some((other, epoch));
                }
            }
        } else if let Some(dir) = c.dirs.get_mut(d) {
            dir.busy = true;
        }
        self.stats.retransmissions += repeats;
        self.schedule(
            self.now.plus_micros(airtime),
            Action::TxDone {
                from,
                to,
                epoch,
                frame,
            },
        );
        true
    }

    pub(super) fn tx_done(&mut self, from: u32, to: u32, epoch: u64, frame: Frame) {
        let p = pair(from, to);
        let d = dir_of(from, to);
        let half_duplex = self.config.half_duplex;
        let Some(c) = self.contacts.get_mut(&p).filter(|c| c.epoch == epoch) else {
            // The contact ended during the transmission: contact_down cleaned up the rest.
            if let Frame::Message { .. } = frame {
                self.stats.messages_lost += 1;
            }
            return;
        };
        let latency = c.link.latency;
        if let Some(dir) = c.dirs.get_mut(d) {
            dir.busy = false;
        }
        if half_duplex {
            for n in [from, to] {
                if let Some(node) = self.nodes.get_mut(n as usize) {
                    node.radio = None;
                }
            }
        }
        match frame {
            Frame::Message { lost: true, .. } => {
                self.stats.messages_lost += 1;
                self.note(&[TAG_MESSAGE_LOST, u64::from(from), u64::from(to)]);
            }
            Frame::Segment {
                stream,
                failed: true,
                ..
            } => self.break_stream(stream),
            Frame::Transfer {
                id,
                bytes,
                failed: true,
            } => {
                if let Some(dir) = c.dirs.get_mut(d) {
                    dir.sending.remove(&id);
                }
                self.abort_transfer(id, from, to, bytes);
            }
            frame => {
                if let Some(dir) = c.dirs.get_mut(d) {
                    dir.sent += frame.len();
                }
                if latency.is_zero() {
                    self.arrive(from, to, epoch, frame);
                } else {
                    self.schedule(
                        self.now + latency,
                        Action::Arrive {
                            from,
                            to,
                            epoch,
                            frame,
                        },
                    );
                }
            }
        }
        self.kick_pair(p);
        if half_duplex {
            self.kick_node(from);
            self.kick_node(to);
        }
    }

    pub(super) fn arrive(&mut self, from: u32, to: u32, epoch: u64, frame: Frame) {
        let p = pair(from, to);
        if self.contact_epoch(p) != Some(epoch) {
            // Lost in the air with the contact (transfers were aborted, streams broken).
            if let Frame::Message { .. } = frame {
                self.stats.messages_lost += 1;
            }
            return;
        }
        match frame {
            Frame::Message { bytes, .. } => {
                let len = bytes.len() as u64;
                let Some(node) = self.nodes.get(to as usize) else {
                    return;
                };
                let inbound = Inbound::Message {
                    transport: Transport::Sim,
                    from: Address::Sim(from),
                    bytes,
                };
                if node.tx.try_send(inbound).is_ok() {
                    self.stats.messages_delivered += 1;
                    self.note(&[TAG_MESSAGE, u64::from(from), u64::from(to), len]);
                } else {
                    self.stats.messages_dropped += 1;
                    self.note(&[TAG_MESSAGE_DROPPED, u64::from(from), u64::from(to)]);
                }
            }
            Frame::Segment {
                stream, data, fin, ..
            } => self.deliver_segment(stream, from, data, fin),
            Frame::Transfer { id, bytes, .. } => {
                if let Some(dir) = self
                    .contacts
                    .get_mut(&p)
                    .and_then(|c| c.dirs.get_mut(dir_of(from, to)))
                {
                    dir.sending.remove(&id);
                }
                self.stats.transfers_done += 1;
                self.note(&[TAG_TRANSFER, id, u64::from(from), u64::from(to)]);
                self.emit(SimEvent::TransferDone {
                    at: self.now,
                    id: TransferId(id),
                    from,
                    to,
                    bytes,
                });
            }
        }
    }
}

/// How many times a frame is sent again before it gets through: `None` if every one of
/// `1 + retries` transmissions is lost.
fn attempts(rng: &mut Rng, loss: f64, retries: u32) -> Option<u32> {
    let mut k = 0;
    while rng.chance(loss) {
        if k == retries {
            return None;
        }
        k += 1;
    }
    Some(k)
}
