//! The plugin against a fake wpa_supplicant: a unix datagram socket in a temp directory that
//! answers scripted replies and sends events to the socket that attached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use tokio::net::UnixDatagram;
use tokio::sync::mpsc as tmpsc;

use super::*;
use crate::TokioClock;

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

const OWN: &str = "02:00:00:00:01:00";
const HIGHER: &str = "02:00:00:00:02:00";
const LOWER: &str = "02:00:00:00:00:00";

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("thali-fake-wpa-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fake daemon: what it was asked, and a way to send events.
struct Fake {
    _dir: TempDir,
    ctrl: PathBuf,
    requests: tmpsc::UnboundedReceiver<String>,
    events: tmpsc::UnboundedSender<String>,
    task: JoinHandle<()>,
}

impl Fake {
    /// A daemon answering `replies` (by the request's first word; `OK` otherwise), or not at
    /// all to requests whose reply is `None`.
    fn start(replies: HashMap<&'static str, Option<String>>) -> Fake {
        let dir = TempDir::new();
        let ctrl = dir.0.join("wlan0");
        let socket = UnixDatagram::bind(&ctrl).unwrap();
        let (req_tx, requests) = tmpsc::unbounded_channel();
        let (events, mut ev_rx) = tmpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            let mut attached: Option<PathBuf> = None;
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                tokio::select! {
                    got = socket.recv_from(&mut buf) => {
                        let Ok((n, from)) = got else { return };
                        let request = String::from_utf8_lossy(&buf[..n]).to_string();
                        let Some(from) = from.as_pathname().map(Path::to_path_buf) else {
                            continue;
                        };
                        let verb = request.split(' ').next().unwrap_or("").to_string();
                        let _ = req_tx.send(request.clone());
                        if verb == "ATTACH" {
                            attached = Some(from.clone());
                        }
                        let reply = match replies.get(verb.as_str()) {
                            Some(Some(r)) => r.clone(),
                            Some(None) => continue,
                            None => "OK\n".to_string(),
                        };
                        let _ = socket.send_to(reply.as_bytes(), &from).await;
                    }
                    event = ev_rx.recv() => {
                        let Some(event) = event else { return };
                        if let Some(to) = &attached {
                            let _ = socket.send_to(event.as_bytes(), to).await;
                        }
                    }
                }
            }
        });
        Fake {
            _dir: dir,
            ctrl,
            requests,
            events,
            task,
        }
    }

    fn standard() -> Fake {
        Fake::start(HashMap::from([(
            "STATUS",
            Some(format!(
                "wpa_state=DISCONNECTED\np2p_device_address={OWN}\naddress={OWN}\n"
            )),
        )]))
    }

    fn send(&self, event: &str) {
        self.events.send(event.to_string()).unwrap();
    }

    /// Waits (up to 5 s) for a request starting with `prefix`, returning it; earlier requests
    /// are skipped.
    async fn expect(&mut self, prefix: &str) -> String {
        let wait = async {
            loop {
                let r = self.requests.recv().await.unwrap();
                if r.starts_with(prefix) {
                    return r;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("no {prefix} request"))
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(fake: &Fake) -> WifiDirectConfig {
    let mut c = WifiDirectConfig::new(&fake.ctrl);
    c.socket_dir = fake.ctrl.parent().unwrap().to_path_buf();
    c.request_timeout_ms = 1_000;
    c
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        TokioClock::new().sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test]
async fn starts_names_the_device_attaches_and_finds() {
    let mut fake = Fake::standard();
    let plugin = WifiDirectPlugin::start(config(&fake)).await.unwrap();
    assert_eq!(fake.expect("STATUS").await, "STATUS");
    let set = fake.expect("SET device_name ").await;
    let name = set.strip_prefix("SET device_name ").unwrap();
    assert!(name.starts_with("THALI-") && name.len() == 14, "{name}");
    assert_eq!(plugin.device_name(), Some(name));
    assert_eq!(plugin.device_address().to_string(), OWN);
    fake.expect("ATTACH").await;
    fake.expect("P2P_FIND").await;
    plugin.shutdown().await;
    fake.expect("P2P_STOP_FIND").await;
    // Closed: links refuse.
    assert!(matches!(
        plugin.connect(&Address::Sim(1)).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn the_lower_address_connects_and_a_group_comes_and_goes() {
    let mut fake = Fake::standard();
    let plugin = WifiDirectPlugin::start(config(&fake)).await.unwrap();
    fake.expect("P2P_FIND").await;
    // A device that is not a Thali peer, then one that is.
    fake.send(&format!(
        "<3>P2P-DEVICE-FOUND {HIGHER} p2p_dev_addr=02:00:00:00:03:00 name='printer' config_methods=0x188"
    ));
    fake.send(&format!(
        "<3>P2P-DEVICE-FOUND {HIGHER} p2p_dev_addr={HIGHER} pri_dev_type=1-0050F204-1 \
         name='THALI-0badf00d' config_methods=0x188 dev_capab=0x25 group_capab=0x0 new=1"
    ));
    assert_eq!(
        fake.expect("P2P_CONNECT").await,
        format!("P2P_CONNECT {HIGHER} pbc go_intent=7")
    );
    fake.send("<3>P2P-GO-NEG-SUCCESS role=GO freq=2412");
    fake.send(&format!(
        "<3>P2P-GROUP-STARTED p2p-wlan9-0 GO ssid=\"DIRECT-ab\" freq=2412 passphrase=\"x y\" go_dev_addr={OWN}"
    ));
    wait_until(|| plugin.group().is_some()).await;
    let group = plugin.group().unwrap();
    assert_eq!(
        (group.ifname.as_str(), group.role),
        ("p2p-wlan9-0", Role::Go)
    );
    // There is no such interface here: no LAN on it, and links say so.
    assert!(!group.lan_ready);
    assert!(matches!(
        plugin.connect(&Address::Sim(1)).await,
        Err(Error::Unreachable(_))
    ));
    let stats = plugin.wifi_stats();
    assert_eq!(stats.groups_started, 1);
    assert!(stats.last_formation_ms.is_some());

    fake.send("<3>P2P-GROUP-REMOVED p2p-wlan9-0 GO reason=REQUESTED");
    fake.expect("P2P_FIND").await;
    wait_until(|| plugin.group().is_none()).await;
    assert_eq!(plugin.wifi_stats().groups_removed, 1);
    plugin.shutdown().await;
}

#[tokio::test]
async fn the_higher_address_waits_and_accepts_the_request() {
    let mut fake = Fake::standard();
    let plugin = WifiDirectPlugin::start(config(&fake)).await.unwrap();
    fake.expect("P2P_FIND").await;
    fake.send(&format!(
        "<3>P2P-DEVICE-FOUND {LOWER} p2p_dev_addr={LOWER} name='THALI-00000001'"
    ));
    fake.send(&format!(
        "<3>P2P-GO-NEG-REQUEST {LOWER} dev_passwd_id=4 go_intent=7"
    ));
    let connect = fake.expect("P2P_").await;
    assert_eq!(connect, format!("P2P_CONNECT {LOWER} pbc go_intent=7"));
    plugin.shutdown().await;
}

#[tokio::test]
async fn a_refused_connect_backs_off_and_finds_again() {
    let mut fake = Fake::start(HashMap::from([
        ("STATUS", Some(format!("p2p_device_address={OWN}\n"))),
        ("P2P_CONNECT", Some("FAIL\n".to_string())),
    ]));
    let plugin = WifiDirectPlugin::start(config(&fake)).await.unwrap();
    fake.expect("P2P_FIND").await;
    fake.send(&format!(
        "<3>P2P-DEVICE-FOUND {HIGHER} p2p_dev_addr={HIGHER} name='THALI-0badf00d'"
    ));
    fake.expect("P2P_CONNECT").await;
    fake.expect("P2P_FIND").await;
    wait_until(|| plugin.wifi_stats().failures >= 1).await;
    assert!(
        plugin
            .wifi_stats()
            .last_error
            .unwrap()
            .contains("refused P2P_CONNECT: FAIL")
    );
    plugin.shutdown().await;
}

#[tokio::test]
async fn idle_groups_are_removed() {
    let mut fake = Fake::standard();
    let mut c = config(&fake);
    c.idle_ms = 1_500;
    let plugin = WifiDirectPlugin::start(c).await.unwrap();
    fake.expect("P2P_FIND").await;
    fake.send("<3>P2P-GROUP-STARTED p2p-wlan9-1 client ssid=\"DIRECT-ab\" freq=2412 go_dev_addr=02:00:00:00:02:00");
    wait_until(|| plugin.group().is_some()).await;
    assert_eq!(
        fake.expect("P2P_GROUP_REMOVE").await,
        "P2P_GROUP_REMOVE p2p-wlan9-1"
    );
    plugin.shutdown().await;
}

#[tokio::test]
async fn garbage_from_the_daemon_is_counted_not_fatal() {
    let mut fake = Fake::standard();
    let plugin = WifiDirectPlugin::start(config(&fake)).await.unwrap();
    fake.expect("P2P_FIND").await;
    fake.send(&"A".repeat(event::MAX_LINE + 10));
    fake.send("");
    fake.send("<3>P2P-GROUP-STARTED ../../etc GO");
    fake.send("<3>P2P-DEVICE-FOUND zz:zz name='THALI-x'");
    wait_until(|| {
        let s = plugin.wifi_stats();
        s.events_unreadable >= 2 && s.events >= 2
    })
    .await;
    assert!(plugin.group().is_none());
    plugin.shutdown().await;
}

#[tokio::test]
async fn requests_time_out_and_bad_status_is_refused() {
    let fake = Fake::start(HashMap::from([("STATUS", None)]));
    let e = WifiDirectPlugin::start(config(&fake)).await.unwrap_err();
    assert!(
        matches!(e, Error::Unreachable(ref m) if m.contains("did not answer STATUS")),
        "{e}"
    );
    let fake = Fake::start(HashMap::from([(
        "STATUS",
        Some("wpa_state=x\n".to_string()),
    )]));
    let e = WifiDirectPlugin::start(config(&fake)).await.unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::PeerMisbehaved);
    // A socket nobody listens on.
    let dir = TempDir::new();
    let e = WifiDirectPlugin::start(WifiDirectConfig::new(dir.0.join("nothing")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::LocalIo);
}

#[tokio::test]
async fn requests_refuse_newlines() {
    let fake = Fake::standard();
    let clock = TokioClock::new();
    let ctrl = CtrlSocket::open(&fake.ctrl, fake.ctrl.parent().unwrap()).unwrap();
    assert!(matches!(
        ctrl.request(&clock, 1_000, "P2P_FIND\nREBOOT").await,
        Err(Error::InvalidConfig(_))
    ));
    assert!(
        ctrl.request(&clock, 1_000, "STATUS")
            .await
            .unwrap()
            .contains(OWN)
    );
    let mut c = config(&fake);
    c.name_prefix = "a b".to_string();
    assert!(matches!(
        WifiDirectPlugin::start(c).await,
        Err(Error::InvalidConfig(_))
    ));
}
