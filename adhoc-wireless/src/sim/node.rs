//! A node of a simulated world as a radio [`Plugin`].

use std::sync::Arc;

use super::engine::Shared;
use super::io::{Opening, SimStream};
use super::world::World;
use crate::discovery::{Discovery, SharedTable, Subscription};
use crate::error::{Error, Result};
use crate::link::{BoxedStream, Incoming, Link, Plugin};
use crate::peer::{Address, Advert, MAX_ADVERT_BYTES, Peer, Transport};

/// One node of a [`World`]: a [`Plugin`] on [`Transport::Sim`] at [`Address::Sim`]`(id)`.
///
/// Discovery is a [`SharedTable`] fed with the adverts the node hears from nodes in contact,
/// so hygiene and `Lost`-after-silence are the same code as on real radios. Links reach only
/// nodes in contact now (otherwise [`Error::Unreachable`]).
#[derive(Clone)]
pub struct SimNode {
    shared: Arc<Shared>,
    id: u32,
    table: SharedTable,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode").field("id", &self.id).finish()
    }
}

impl SimNode {
    pub(crate) fn new(shared: Arc<Shared>, id: u32, table: SharedTable) -> SimNode {
        SimNode { shared, id, table }
    }

    /// Its id in the world.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its address: [`Address::Sim`]`(id)`.
    pub fn address(&self) -> Address {
        Address::Sim(self.id)
    }

    /// Its peer table (for the counters of [`SharedTable::stats`]).
    pub fn table(&self) -> &SharedTable {
        &self.table
    }

    /// The world it lives in.
    pub fn world(&self) -> World {
        World::from_shared(self.shared.clone())
    }

    /// Stops advertising (the others lose it after their silence).
    pub fn stop_advertising(&self) {
        let id = self.id;
        let _ = self.shared.with(|e| e.advertise(id, None));
    }

    fn target(&self, to: &Address) -> Result<u32> {
        match to {
            Address::Sim(n) => Ok(*n),
            other => Err(Error::WrongAddress(format!(
                "{other} is not a simulated-radio address"
            ))),
        }
    }
}

impl Discovery for SimNode {
    fn peers(&self) -> Vec<Peer> {
        // Catch up with the clock first, so silences that ended by now are applied.
        self.shared.with(|_| ());
        self.table.peers()
    }

    fn subscribe(&self) -> Subscription {
        self.table.subscribe()
    }
}

#[async_trait::async_trait]
impl Link for SimNode {
    fn transport(&self) -> Transport {
        Transport::Sim
    }

    fn max_message_bytes(&self) -> usize {
        self.shared.with(|e| e.config.max_message_bytes)
    }

    async fn send(&self, to: &Address, message: &[u8]) -> Result<()> {
        let to = self.target(to)?;
        let from = self.id;
        self.shared.with(|e| e.send_message(from, to, message))
    }

    async fn connect(&self, to: &Address) -> Result<BoxedStream> {
        let to = self.target(to)?;
        let from = self.id;
        let id = self.shared.with(|e| e.open_stream(from, to))?;
        let stream = SimStream::new(self.shared.clone(), id, 0, to);
        let stream = Opening::new(stream).await?;
        Ok(Box::new(stream))
    }

    fn incoming(&self) -> Option<Incoming> {
        let id = self.id;
        self.shared.with(|e| e.take_incoming(id))
    }
}

impl Plugin for SimNode {
    fn advertise(&self, advert: Advert) -> Result<()> {
        let bytes = advert.encode();
        if bytes.len() > MAX_ADVERT_BYTES {
            return Err(Error::TooLarge {
                what: "advert",
                size: bytes.len(),
                limit: MAX_ADVERT_BYTES,
            });
        }
        let id = self.id;
        self.shared.with(|e| e.advertise(id, Some(bytes)))
    }
}
