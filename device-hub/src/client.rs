//! A small HTTPS client to a hub (another device's, or this device's own from the CLI): mutual TLS
//! pinned to the hub's key id, JSON in and out.

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use couch_sync::replicate::Connector;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use public_key_identity::{HttpKeyUrl, Identity};
use serde_json::Value;

use crate::tls::PinnedTls;

/// A connection factory for one hub.
pub struct HubClient {
    connector: PinnedTls,
    host: String,
    port: u16,
}

impl HubClient {
    /// A client for the hub at `url`, identifying as `me`.
    pub fn new(url: &HttpKeyUrl, me: &Identity) -> Result<HubClient> {
        let target = url.to_https();
        Ok(HubClient {
            connector: PinnedTls::new(target.pin, me)?,
            host: target.host,
            port: target.port,
        })
    }

    /// A client for this device's own hub at `host:port` (the CLI: the device key is the owner).
    pub fn local(host: &str, port: u16, me: &Identity) -> Result<HubClient> {
        Ok(HubClient {
            connector: PinnedTls::new(me.key_id(), me)?,
            host: host.to_owned(),
            port,
        })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let stream = self
            .connector
            .connect("https", &self.host, self.port)
            .await
            .with_context(|| format!("connecting to the hub at {}:{}", self.host, self.port))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))?;
        Ok(sender.send_request(request).await?)
    }

    /// Sends a request and reads a JSON answer: `(status, body)`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let response = self.send(method, path, body).await?;
        let status = response.status().as_u16();
        let bytes = http_body_util::Limited::new(response.into_body(), 16 * 1024 * 1024)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer: {e}"))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// As [`call`](Self::call), failing unless the status is 2xx; the error carries the hub's
    /// `reason`.
    pub async fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if !(200..300).contains(&status) {
            let reason = value
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            let error = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("error");
            return Err(anyhow!("{method} {path}: {status} {error}: {reason}"));
        }
        Ok(value)
    }

    /// Sends a request whose answer is newline-delimited JSON; calls `each` per line.
    pub async fn lines(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        mut each: impl FnMut(Value),
    ) -> Result<u16> {
        let response = self.send(method, path, body).await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                pending.extend_from_slice(data);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        each(v);
                    }
                }
            }
        }
        Ok(status)
    }
}
