//! Lost-device revocation with device hubs as real processes on 127.0.0.1: three devices of one
//! person (laptop A, tablet B, phone C, all in group `me`); the phone is lost and revoked on the
//! laptop. The laptop refuses it at once (in the TLS handshake, and its open connections are
//! cut); the tablet refuses it after one sync with the laptop, though the phone's own policy
//! edit had reached the tablet first and conflicts with the laptop's; neither replicates with
//! it any more, both list it as revoked, and what the phone writes into its policy afterwards
//! goes nowhere. The error paths of `device-hub revoke KEYID` too: a malformed key id, a key the
//! hub does not know, its own key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod support;

use std::time::Duration;

use public_key_identity::Identity;
use serde_json::{Value, json};
use support::{Hub, eventually, pair, request_pinned, stranger};

async fn get(hub: &Hub, path: &str) -> (u16, Value) {
    let owner = hub.owner();
    hub.request(Some(&owner), "GET", path, None).await
}

async fn put(hub: &Hub, path: &str, body: Value) -> Value {
    let owner = hub.owner();
    let (status, reply) = hub.request(Some(&owner), "PUT", path, Some(&body)).await;
    assert!(
        status == 201 || status == 412,
        "PUT {path} on {}: {status} {reply}",
        hub.name
    );
    reply
}

/// A request to `hub` with `who`'s key: the status and answer, or why there was none.
async fn as_key(
    hub: &Hub,
    who: &Identity,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    request_pinned(hub.port, hub.key_id, Some(who), method, path, body).await
}

/// What a client holding `who`'s key gets from `hub` at the TLS level: connect, send a request,
/// read. `Err` carries TLS's reason (a fatal alert from the server, say).
async fn tls_exchange(hub: &Hub, who: &Identity) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", hub.port))
        .await
        .map_err(|e| e.to_string())?;
    let config = public_key_identity::tls::client_config(hub.key_id, Some(who)).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(public_key_identity::tls::server_name("127.0.0.1"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Asserts that `hub` refuses `who` in the TLS handshake (the alert of a revoked certificate),
/// so that it gets no HTTP answer at all, for reading or for writing the policy.
async fn assert_refused(hub: &Hub, who: &Identity) {
    let err = tls_exchange(hub, who)
        .await
        .map(|answer| String::from_utf8_lossy(&answer).into_owned())
        .expect_err("the revoked key got through the handshake");
    assert!(err.contains("CertificateRevoked"), "{}: {err}", hub.name);
    let doc = json!({"type": "acl", "v": 1, "db": "*", "admin": [format!("key:{}", who.key_id())]});
    for (method, path, body) in [
        ("GET", "/hub-policy/_all_docs", None),
        ("PUT", "/hub-policy/acl:stolen", Some(&doc)),
        ("GET", "/_hub/card", None),
    ] {
        if let Ok((status, reply)) = as_key(hub, who, method, path, body).await {
            panic!(
                "{} answered the revoked key's {method} {path}: {status} {reply}",
                hub.name
            );
        }
    }
}

/// The key ids of `hub`'s peers of kind `me` (its status).
async fn my_devices(hub: &Hub) -> Vec<String> {
    let (status, s) = get(hub, "/_hub/api/status").await;
    assert_eq!(status, 200, "{s}");
    s["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == "me")
        .filter_map(|p| p["key_id"].as_str().map(str::to_owned))
        .collect()
}

/// Whether `hub`'s policy database holds `acl:*` granting admin to `key:KEY`.
async fn grants_admin_to(hub: &Hub, key: &str) -> bool {
    let (status, acl) = get(hub, "/hub-policy/acl:*").await;
    assert_eq!(status, 200, "{acl}");
    acl["admin"]
        .as_array()
        .is_some_and(|a| a.iter().any(|m| m == &json!(format!("key:{key}"))))
}

async fn revoke_api(hub: &Hub, key: &str) -> (u16, Value) {
    let owner = hub.owner();
    hub.request(
        Some(&owner),
        "POST",
        "/_hub/api/revoke-key",
        Some(&json!({ "key": key })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_is_revoked_on_every_device_and_cannot_grant_itself_back() {
    let mut a = Hub::start("laptop");
    let mut b = Hub::start("tablet");
    let c = Hub::start("phone");
    pair(&a, &b, false);
    pair(&a, &c, false);
    let (ka, kb, kc) = (
        a.key_id.to_string(),
        b.key_id.to_string(),
        c.key_id.to_string(),
    );
    // The policy (group `me`) and the cards (directory) spread: each device knows the others.
    for (hub, others) in [(&a, [&kb, &kc]), (&b, [&ka, &kc]), (&c, [&ka, &kb])] {
        eventually(
            90,
            &format!("{} lists both other devices", hub.name),
            || async {
                let mine = my_devices(hub).await;
                others.iter().all(|k| mine.contains(k)).then_some(())
            },
        )
        .await;
    }
    let phone = c.owner();
    // Before: the phone is one of the person's devices, admin everywhere.
    for hub in [&a, &b] {
        let (status, _) = as_key(hub, &phone, "GET", "/hub-policy/_all_docs", None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{} did not trust the phone before", hub.name);
    }
    // A continuous feed the phone holds open on the laptop.
    let feed = {
        let (port, pin, phone) = (a.port, a.key_id, c.owner());
        tokio::spawn(async move {
            request_pinned(
                port,
                pin,
                Some(&phone),
                "GET",
                "/hub-directory/_changes?feed=continuous&heartbeat=1000",
                None,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!feed.is_finished(), "the feed ended by itself: {feed:?}");

    // The tablet is off while the laptop revokes the phone.
    b.stop();

    // Error paths first: a malformed key id, a key nobody knows, the hub's own key.
    let out = a.cli(&["revoke", "notes"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a key id") && err.contains("DB MEMBER RIGHT"),
        "{err}"
    );
    let out = a.cli(&["revoke", "notes", &format!("key:{kc}")]);
    assert!(!out.status.success(), "two arguments are neither form");
    let (status, reply) = revoke_api(&a, "kc").await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("bad_request")),
        "{reply}"
    );
    let nobody = stranger().key_id().to_string();
    let out = a.cli(&["revoke", &nobody]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not known to this hub"), "{err}");
    let (status, _) = revoke_api(&a, &nobody).await;
    assert_eq!(status, 404);
    let out = a.cli(&["revoke", &ka]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("own key"), "{err}");
    let (status, reply) = revoke_api(&a, &format!("key:{ka}")).await;
    assert_eq!(status, 400, "{reply}");
    let (_, status) = get(&a, "/_hub/api/status").await;
    assert_eq!(
        status["revoked"],
        json!([]),
        "a refused revocation revoked something"
    );

    // The phone is revoked on the laptop: refused at once, its open feed cut.
    let out = a.cli_ok(&["revoke", &kc]);
    assert!(out.contains("revoked"), "{out}");
    let again = a.cli_ok(&["revoke", &format!("key:{kc}")]);
    assert!(again.contains("already revoked"), "{again}");
    assert_refused(&a, &phone).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), feed)
        .await
        .expect("the revoked phone's open feed was not cut");
    assert!(ended.unwrap().is_err(), "the feed ended normally, not cut");
    // The laptop's status: the phone under "revoked" (by the laptop, when), not among the
    // peers; its replications stop.
    let (_, status) = get(&a, "/_hub/api/status").await;
    let revoked = status["revoked"].as_array().unwrap();
    assert_eq!(revoked.len(), 1, "{status}");
    assert_eq!(revoked[0]["key_id"], kc);
    assert_eq!(revoked[0]["name"], "phone");
    assert_eq!(revoked[0]["by"], ka);
    assert_eq!(revoked[0]["by_name"], "laptop");
    assert!(revoked[0]["at"].as_u64().unwrap() > 0);
    assert!(!my_devices(&a).await.contains(&kc));
    eventually(
        15,
        "the laptop stops replicating with the phone",
        || async {
            let (_, s) = get(&a, "/_hub/api/status").await;
            (!s["replication"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["peer"] == kc))
            .then_some(())
        },
    )
    .await;
    let text = a.cli_ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("revoked") && l.contains(&kc) && l.contains("laptop")),
        "{text}"
    );
    // Meanwhile the laptop's owner changes the same ACL document the phone is about to edit.
    a.cli_ok(&["grant", "*", "group:friends", "read"]);
    a.stop();

    // The thief edits the phone's policy: admin for the phone itself. The tablet comes back
    // while the laptop is off, and takes the edit from the phone: it has not heard yet.
    c.cli_ok(&["grant", "*", &format!("key:{kc}"), "admin"]);
    b.start_again();
    eventually(60, "the phone's edit reaches the tablet first", || async {
        grants_admin_to(&b, &kc).await.then_some(())
    })
    .await;

    // The laptop comes back; one sync of the policy with it and the tablet refuses the phone,
    // although the phone's edit conflicts with the laptop's (whichever wins the conflict).
    a.start_again();
    let out = b.cli_ok(&["replicate", &ka, "hub-policy"]);
    assert!(out.contains("in sync with"), "{out}");
    let (_, acl) = get(&b, "/hub-policy/acl:*?conflicts=true").await;
    assert_eq!(
        acl["_conflicts"].as_array().map(Vec::len),
        Some(1),
        "the two edits of acl:* should conflict: {acl}"
    );
    eventually(15, "the tablet refuses the phone", || async {
        as_key(&b, &phone, "GET", "/", None)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert_refused(&b, &phone).await;
    let (_, status) = get(&b, "/_hub/api/status").await;
    let revoked = status["revoked"].as_array().unwrap();
    assert_eq!(revoked.len(), 1, "{status}");
    assert_eq!(
        (&revoked[0]["key_id"], &revoked[0]["by"]),
        (&json!(kc), &json!(ka))
    );
    assert!(!my_devices(&b).await.contains(&kc));
    eventually(
        15,
        "the tablet stops replicating with the phone",
        || async {
            let (_, s) = get(&b, "/_hub/api/status").await;
            (!s["replication"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["peer"] == kc))
            .then_some(())
        },
    )
    .await;
    let (status, reply) = b
        .request(
            Some(&b.owner()),
            "POST",
            "/_hub/api/replicate",
            Some(&json!({"peer": kc})),
        )
        .await;
    assert_eq!(
        status, 403,
        "a one-shot sync with the revoked phone: {reply}"
    );

    // Whatever the phone writes into its policy now goes nowhere: its pushes are refused.
    c.cli_ok(&["grant", "stolen", &format!("key:{kc}"), "write"]);
    c.cli_ok(&["grant", "*", "anonymous", "read"]);
    let (status, _) = get(&c, "/hub-policy/acl:stolen").await;
    assert_eq!(status, 200, "the phone's own policy changed");
    // The laptop and the tablet still sync with each other.
    put(&a, "/notes", json!({})).await;
    put(&a, "/notes/after", json!({"n": 1})).await;
    eventually(60, "the tablet gets the laptop's new note", || async {
        (get(&b, "/notes/after").await.0 == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    for hub in [&a, &b] {
        let (status, reply) = get(hub, "/hub-policy/acl:stolen").await;
        assert_eq!(
            status, 404,
            "the phone's grant reached {}: {reply}",
            hub.name
        );
        let (_, acl) = get(hub, "/hub-policy/acl:*").await;
        assert!(
            !acl["read"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m == "anonymous"),
            "the phone's grant reached {}: {acl}",
            hub.name
        );
        assert_refused(hub, &phone).await;
    }
    assert_eq!(
        get(&c, "/notes/after").await.0,
        404,
        "the revoked phone still receives data"
    );
}
