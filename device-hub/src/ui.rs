//! The status page at `/_hub/`: server-rendered HTML with a little JavaScript for the forms.
//! Only the owner (a browser session from `device-hub ui`, or the owner's or an admin's
//! certificate) sees it; anyone else gets a page that says how to log in, and nothing else.

use std::sync::Arc;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use public_key_identity::IdentityCard;
use serde_json::Value;

use crate::api::{is_admin, status_json};
use crate::authz::principal;
use crate::hub::Hub;

/// HTML-escapes text.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn s(v: &Value) -> String {
    match v {
        Value::String(t) => esc(t),
        Value::Null => String::new(),
        other => esc(&other.to_string()),
    }
}

fn bytes(v: &Value) -> String {
    let n = v.as_u64().unwrap_or(0) as f64;
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:64rem;color:#222}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .6rem;border-bottom:1px solid #eee;text-align:left;font-size:.9rem}\
code{font-size:.8rem;word-break:break-all}.qr svg{width:14rem;height:14rem}.code{font-size:2rem;letter-spacing:.3rem;font-weight:bold}\
button{padding:.3rem .8rem}input{padding:.3rem;width:30rem}.err{color:#b00}";

const SCRIPT: &str = r#"
async function api(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body || {})});
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.reason || r.statusText);
  return j;
}
async function startPairing(ev) {
  ev.preventDefault();
  const out = document.getElementById('pair-result');
  out.textContent = 'pairing…';
  try {
    const j = await api('/_hub/api/pair/start', {url: document.getElementById('pair-url').value, kind: document.getElementById('pair-kind').value});
    out.innerHTML = 'Code <span class="code" id="pair-code">' + j.code + '</span> with <b></b>. Check the other device shows the same code, then confirm below.';
    out.querySelector('b').textContent = j.name;
    setTimeout(() => location.reload(), 1500);
  } catch (e) { out.innerHTML = '<span class="err"></span>'; out.firstChild.textContent = e.message; }
}
async function confirmPairing(code) {
  try { await api('/_hub/api/pair/confirm', {code}); location.reload(); }
  catch (e) { alert(e.message); }
}
addEventListener('DOMContentLoaded', () => {
  for (const td of document.querySelectorAll('td.when[data-ms]')) {
    const ms = Number(td.dataset.ms);
    if (ms) td.textContent = new Date(ms).toLocaleString();
  }
});
async function revokeKey(ev) {
  ev.preventDefault();
  const key = document.getElementById('revoke-key').value.trim();
  const out = document.getElementById('revoke-result');
  if (!confirm('Revoke ' + key + ' for good? Every one of your devices will refuse this key once they sync; it cannot be undone.')) return;
  try { await api('/_hub/api/revoke-key', {key}); location.reload(); }
  catch (e) { out.innerHTML = '<span class="err"></span>'; out.firstChild.textContent = e.message; }
}
async function compact(db) {
  try { await api('/_hub/api/compact/' + encodeURIComponent(db)); location.reload(); }
  catch (e) { alert(e.message); }
}
"#;

fn login_page() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!doctype html><meta charset=utf-8><title>Device hub</title><style>{STYLE}</style><h1>Device hub</h1><p>This page is for the device's owner. Run <code>device-hub ui</code> on the device and open the link it prints.</p>"),
    )
        .into_response()
}

/// `GET /_hub/`.
pub async fn page(State(hub): State<Arc<Hub>>, parts: Parts) -> Response {
    if !is_admin(&hub, principal(&hub, &parts)) {
        return login_page();
    }
    match render(&hub) {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("status page failed: {e:#}"),
        )
            .into_response(),
    }
}

fn render(hub: &Hub) -> anyhow::Result<String> {
    render_status(&status_json(hub)?)
}

/// The page for the status JSON of `GET /_hub/api/status`.
fn render_status(status: &Value) -> anyhow::Result<String> {
    let id = &status["identity"];
    let card = IdentityCard::from_json(id["card"].as_str().unwrap_or_default())?;
    let qr = card.to_qr_svg()?;
    let qr = qr
        .split_once("?>")
        .map_or(qr.as_str(), |(_, svg)| svg)
        .to_owned();
    let mut html = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Device hub — {name}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>\
         <h1>Device hub: <span id=hub-name>{name}</span></h1>\
         <h2>Identity</h2><table><tr><th>Key id</th><td><code id=key-id>{key}</code></td></tr>\
         <tr><th>Address</th><td><code id=httpkey-url>{url}</code></td></tr>\
         <tr><th>Browser key</th><td><code>{browser}</code></td></tr></table>\
         <p class=qr title='identity card'>{qr}</p>",
        name = s(&id["name"]),
        key = s(&id["key_id"]),
        url = id["endpoints"]
            .as_array()
            .and_then(|e| e.first())
            .map(s)
            .unwrap_or_default(),
        browser = s(&id["browser_key_id"]),
    );
    html.push_str("<h2>Pair</h2><form onsubmit='startPairing(event)'><input id=pair-url placeholder='httpkey://host:port/keyid' required> <select id=pair-kind><option value=me>my device</option><option value=friend>a friend</option></select> <button id=pair-start>Pair</button></form><p id=pair-result></p>");
    let pairings = status["pairings"].as_array().cloned().unwrap_or_default();
    if !pairings.is_empty() {
        html.push_str(
            "<table id=pairings><tr><th>Peer</th><th>Kind</th><th>Code</th><th></th></tr>",
        );
        for p in &pairings {
            let code = s(&p["code"]);
            html.push_str(&format!(
                "<tr><td>{name}<br><code>{key}</code></td><td>{kind}{dir}</td><td class=code>{code}</td><td>{button}</td></tr>",
                name = s(&p["name"]),
                key = s(&p["key_id"]),
                kind = s(&p["kind"]),
                dir = if p["incoming"].as_bool() == Some(true) { " (incoming)" } else { "" },
                button = if code.is_empty() { String::new() } else { format!("<button class=confirm onclick=\"confirmPairing('{code}')\">Codes match — confirm</button>") },
            ));
        }
        html.push_str("</table>");
    }
    if let Some(r) = id["revoked"].as_object() {
        html.push_str(&format!(
            "<p class=err id=self-revoked>This device was revoked by {} — your other devices refuse it.</p>",
            r.get("by_name")
                .filter(|v| !v.is_null())
                .or_else(|| r.get("by"))
                .map(s)
                .unwrap_or_default()
        ));
    }
    html.push_str(
        "<h2>Peers</h2><table id=peers><tr><th>Name</th><th>Kind</th><th>Key id</th></tr>",
    );
    for p in status["peers"].as_array().into_iter().flatten() {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            s(&p["name"]),
            s(&p["kind"]),
            s(&p["key_id"])
        ));
    }
    html.push_str("</table><h2>Revoked</h2><form onsubmit='revokeKey(event)'><input id=revoke-key placeholder='key id of a lost device (from Peers)' required> <button id=revoke-start>Revoke for good</button></form><p id=revoke-result></p>\
        <table id=revoked><tr><th>Name</th><th>Key id</th><th>Revoked by</th><th>When</th></tr>");
    let revoked = status["revoked"].as_array().cloned().unwrap_or_default();
    if revoked.is_empty() {
        html.push_str("<tr><td colspan=4>none</td></tr>");
    }
    for r in &revoked {
        html.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=when data-ms=\"{}\">{}</td></tr>",
            s(&r["name"]),
            s(&r["key_id"]),
            if r["by_name"].is_null() { s(&r["by"]) } else { s(&r["by_name"]) },
            s(&r["at"]),
            s(&r["at"]),
        ));
    }
    html.push_str("</table><h2>Replication</h2><table id=replication><tr><th>Peer</th><th>Database</th><th>Direction</th><th>State</th><th>Written</th><th>Pending</th><th>Last sync</th><th>Last error</th></tr>");
    for r in status["replication"].as_array().into_iter().flatten() {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=when data-ms=\"{}\">{}</td><td class=err>{}</td></tr>",
            s(&r["name"]),
            s(&r["db"]),
            s(&r["direction"]),
            s(&r["state"]),
            s(&r["docs_written"]),
            s(&r["pending"]),
            s(&r["last_sync"]),
            if r["last_sync"].is_null() { "—" } else { "" },
            s(&r["last_error"])
        ));
    }
    html.push_str("</table><h2>Databases</h2><table id=databases><tr><th>Name</th><th>Documents</th><th>Size</th><th>File</th><th>Quota</th><th></th></tr>");
    for d in status["databases"].as_array().into_iter().flatten() {
        let name = s(&d["name"]);
        html.push_str(&format!(
            "<tr><td>{name}{local}</td><td>{docs}</td><td>{size}</td><td>{file}</td><td>{quota}</td><td><button onclick=\"compact('{name}')\">Compact</button></td></tr>",
            local = if d["local_only"].as_bool() == Some(true) { " (local only)" } else { "" },
            docs = s(&d["doc_count"]),
            size = bytes(&d["active_size"]),
            file = bytes(&d["file_size"]),
            quota = if d["quota"].is_null() { "—".to_owned() } else { bytes(&d["quota"]) },
        ));
    }
    html.push_str("</table><form method=post action=/_hub/logout><p><button>Log out</button></p></form></body></html>");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_a_peer_controls() {
        assert_eq!(
            esc("<b onclick='x'>&\"</b>"),
            "&lt;b onclick=&#39;x&#39;&gt;&amp;&quot;&lt;/b&gt;"
        );
        assert_eq!(s(&serde_json::json!("<script>")), "&lt;script&gt;");
        assert_eq!(bytes(&serde_json::json!(1_500_000)), "1.5 MB");
    }

    /// Revoked keys are listed with who revoked them and when, escaped; a peer row offers the
    /// revocation; a device that learned it was revoked says so.
    #[test]
    fn the_page_lists_revoked_keys() {
        use public_key_identity::{Identity, KeyAlgorithm};
        let device = Identity::generate(KeyAlgorithm::Ed25519).unwrap();
        let card = IdentityCard::sign(&device, "laptop", Vec::new(), Vec::new(), 1).unwrap();
        let lost = "a".repeat(52);
        let status = serde_json::json!({
            "identity": {"key_id": device.key_id().to_string(), "name": "laptop",
                         "endpoints": [], "browser_key_id": "", "card": card.to_json(),
                         "revoked": null},
            "peers": [{"key_id": "b".repeat(52), "kind": "me", "name": "tablet"}],
            "revoked": [{"key_id": lost, "name": "<phone>", "by": device.key_id().to_string(),
                         "by_name": "laptop", "at": 1_767_225_600_000_u64}],
            "replication": [], "databases": [], "pairings": [],
        });
        let html = render_status(&status).unwrap();
        let table = html.split("<table id=revoked>").nth(1).unwrap();
        let table = table.split("</table>").next().unwrap();
        assert!(table.contains(&lost), "{table}");
        assert!(table.contains("&lt;phone&gt;"), "{table}");
        assert!(table.contains("<td>laptop</td>"), "{table}");
        assert!(table.contains("data-ms=\"1767225600000\""), "{table}");
        assert!(html.contains("<input id=revoke-key"));
        assert!(!html.contains("id=self-revoked"));

        let mut revoked = status.clone();
        revoked["revoked"] = serde_json::json!([]);
        revoked["identity"]["revoked"] = serde_json::json!({"by": "x", "by_name": "tablet"});
        let html = render_status(&revoked).unwrap();
        assert!(html.contains("<tr><td colspan=4>none</td></tr>"));
        assert!(html.contains("This device was revoked by tablet"), "{html}");
    }
}
