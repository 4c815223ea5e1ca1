//! What wpa_supplicant says, parsed: unsolicited events and the few replies the plugin reads.
//!
//! Everything here is text from another process, so it is treated as untrusted input: lines
//! longer than [`MAX_LINE`] are refused, at most [`MAX_FIELDS`] `key=value` fields are read per
//! line, MAC addresses and interface names are checked before they go back into a command (an
//! interface name is 1..=15 bytes of `[A-Za-z0-9_.-]`), and nothing panics on what it cannot
//! read: it becomes [`Event::Other`] or `None`.

use std::fmt;

/// The longest event or reply line read (wpa_supplicant's own event buffer is 4 KiB; a
/// `P2P_PEER` reply fits as well).
pub const MAX_LINE: usize = 8 * 1024;
/// The most `key=value` fields read from one line (later ones are ignored).
pub const MAX_FIELDS: usize = 32;
/// The longest interface name Linux allows (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;
/// The longest P2P device name (the WPS Device Name attribute).
pub const MAX_DEVICE_NAME: usize = 32;

/// A 48-bit MAC address (a P2P device or interface address).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `02:00:00:00:01:00` (hex digits of either case, exactly six octets).
    pub fn parse(text: &str) -> Option<MacAddr> {
        if text.len() != 17 {
            return None;
        }
        let mut out = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut out {
            let part = parts.next()?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Our role in a P2P group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Group owner (the soft access point of the group).
    Go,
    /// Client of another device's group.
    Client,
}

/// An unsolicited event of wpa_supplicant's control interface (the ones the plugin acts on).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `P2P-DEVICE-FOUND <addr> p2p_dev_addr=<addr> ... name='<device name>' ...`
    DeviceFound {
        /// The P2P device address.
        addr: MacAddr,
        /// Its device name (empty when none was given).
        name: String,
    },
    /// `P2P-DEVICE-LOST p2p_dev_addr=<addr>`
    DeviceLost {
        /// The P2P device address.
        addr: MacAddr,
    },
    /// `P2P-GO-NEG-REQUEST <addr> dev_passwd_id=N go_intent=N`: a peer asks to form a group.
    GoNegRequest {
        /// The P2P device address of the peer.
        addr: MacAddr,
    },
    /// `P2P-GO-NEG-SUCCESS role=GO|client ...`
    GoNegSuccess,
    /// `P2P-GO-NEG-FAILURE status=N`
    GoNegFailure {
        /// The P2P status code, if it was given.
        status: Option<i32>,
    },
    /// `P2P-GROUP-FORMATION-FAILURE`
    GroupFormationFailure,
    /// `P2P-GROUP-STARTED <ifname> GO|client ssid="..." freq=N ... go_dev_addr=<addr>`
    GroupStarted {
        /// The group's network interface.
        ifname: String,
        /// Our role in it.
        role: Role,
        /// The group owner's P2P device address.
        go_dev_addr: Option<MacAddr>,
    },
    /// `P2P-GROUP-REMOVED <ifname> GO|client reason=...`
    GroupRemoved {
        /// The group's network interface.
        ifname: String,
        /// Why, as wpa_supplicant said it (`IDLE`, `REQUESTED`, ...).
        reason: Option<String>,
    },
    /// `AP-STA-CONNECTED <addr> p2p_dev_addr=<addr>`: a client joined our group.
    StaConnected {
        /// The client's P2P device address (its interface address when none was given).
        addr: MacAddr,
    },
    /// `AP-STA-DISCONNECTED <addr> p2p_dev_addr=<addr>`
    StaDisconnected {
        /// The client's P2P device address (its interface address when none was given).
        addr: MacAddr,
    },
    /// `P2P-FIND-STOPPED`
    FindStopped,
    /// Any other event, or one of the above that did not parse: its name only.
    Other(String),
}

/// Splits the `<N>` priority prefix off an event line; `None` when it has none (a reply).
pub fn strip_priority(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('<')?;
    let end = rest.find('>')?;
    if end == 0 || end > 2 || !rest[..end].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(&rest[end + 1..])
}

/// The tokens of a line: bare words and `key=value` fields, a value in `'...'` or `"..."` may
/// hold spaces (it ends at its closing quote followed by a space or the end of the line).
#[derive(Debug, Default)]
struct Tokens<'a> {
    words: Vec<&'a str>,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Tokens<'a> {
    fn parse(line: &'a str) -> Tokens<'a> {
        let mut out = Tokens::default();
        let mut rest = line.trim_end_matches(['\n', '\r']);
        while out.fields.len() < MAX_FIELDS && out.words.len() < MAX_FIELDS {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            let word_end = rest.find(' ').unwrap_or(rest.len());
            let eq = rest[..word_end].find('=');
            match eq {
                None => {
                    out.words.push(&rest[..word_end]);
                    rest = &rest[word_end..];
                }
                Some(eq) => {
                    let key = &rest[..eq];
                    let after = &rest[eq + 1..];
                    let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"');
                    let (value, next) = match quote {
                        Some(q) => {
                            let body = &after[1..];
                            let close = find_closing(body, q);
                            match close {
                                Some(i) => (&body[..i], &body[i + 1..]),
                                // No closing quote: the rest of the line.
                                None => (body, ""),
                            }
                        }
                        None => {
                            let end = after.find(' ').unwrap_or(after.len());
                            (&after[..end], &after[end..])
                        }
                    };
                    out.fields.push((key, value));
                    rest = next;
                }
            }
        }
        out
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn mac(&self, key: &str) -> Option<MacAddr> {
        self.get(key).and_then(MacAddr::parse)
    }
}

/// The index of the quote `q` in `body` that is followed by a space or ends the line.
fn find_closing(body: &str, q: char) -> Option<usize> {
    body.char_indices()
        .filter(|(_, c)| *c == q)
        .map(|(i, _)| i)
        .find(|i| {
            matches!(
                body.as_bytes().get(i + 1),
                None | Some(b' ' | b'\n' | b'\r')
            )
        })
}

/// Whether `name` is a network interface name we put into a command (1..=15 bytes of
/// `[A-Za-z0-9_.-]`).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A device name as we keep it: at most [`MAX_DEVICE_NAME`] bytes, printable ASCII only
/// (anything else becomes `_`, as wpa_supplicant itself filters names).
fn clean_name(name: &str) -> String {
    name.chars()
        .take(MAX_DEVICE_NAME)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses one event line (with or without its `<N>` prefix). `None` when it is too long or
/// empty.
pub fn parse_event(line: &str) -> Option<Event> {
    if line.len() > MAX_LINE {
        return None;
    }
    let body = strip_priority(line).unwrap_or(line);
    let tokens = Tokens::parse(body);
    let name = *tokens.words.first()?;
    // The first bare word after the event name (a MAC address or an interface name).
    let arg = |n: usize| tokens.words.get(n).copied();
    let other = || Event::Other(name.chars().take(64).collect());
    let event = match name {
        "P2P-DEVICE-FOUND" => {
            let addr = tokens
                .mac("p2p_dev_addr")
                .or_else(|| arg(1).and_then(MacAddr::parse));
            match addr {
                Some(addr) => Event::DeviceFound {
                    addr,
                    name: clean_name(tokens.get("name").unwrap_or("")),
                },
                None => other(),
            }
        }
        "P2P-DEVICE-LOST" => match tokens.mac("p2p_dev_addr") {
            Some(addr) => Event::DeviceLost { addr },
            None => other(),
        },
        "P2P-GO-NEG-REQUEST" => match arg(1).and_then(MacAddr::parse) {
            Some(addr) => Event::GoNegRequest { addr },
            None => other(),
        },
        "P2P-GO-NEG-SUCCESS" => Event::GoNegSuccess,
        "P2P-GO-NEG-FAILURE" => Event::GoNegFailure {
            status: tokens.get("status").and_then(|s| s.parse().ok()),
        },
        "P2P-GROUP-FORMATION-FAILURE" => Event::GroupFormationFailure,
        "P2P-GROUP-STARTED" => {
            let role = match arg(2) {
                Some("GO") => Some(Role::Go),
                Some("client") => Some(Role::Client),
                _ => None,
            };
            match (arg(1).filter(|n| valid_ifname(n)), role) {
                (Some(ifname), Some(role)) => Event::GroupStarted {
                    ifname: ifname.to_string(),
                    role,
                    go_dev_addr: tokens.mac("go_dev_addr"),
                },
                _ => other(),
            }
        }
        "P2P-GROUP-REMOVED" => match arg(1).filter(|n| valid_ifname(n)) {
            Some(ifname) => Event::GroupRemoved {
                ifname: ifname.to_string(),
                reason: tokens.get("reason").map(|r| r.chars().take(64).collect()),
            },
            None => other(),
        },
        "AP-STA-CONNECTED" | "AP-STA-DISCONNECTED" => {
            let addr = tokens
                .mac("p2p_dev_addr")
                .or_else(|| arg(1).and_then(MacAddr::parse));
            match (addr, name) {
                (Some(addr), "AP-STA-CONNECTED") => Event::StaConnected { addr },
                (Some(addr), _) => Event::StaDisconnected { addr },
                (None, _) => other(),
            }
        }
        "P2P-FIND-STOPPED" => Event::FindStopped,
        _ => other(),
    };
    Some(event)
}

/// The value of `key` in a reply of `key=value` lines (`STATUS`, `P2P_PEER`), if present.
pub fn reply_field<'a>(reply: &'a str, key: &str) -> Option<&'a str> {
    reply
        .lines()
        .take(256)
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// The device name in a `P2P_PEER <addr>` reply.
pub fn peer_device_name(reply: &str) -> Option<String> {
    reply_field(reply, "device_name").map(clean_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 1, 0]);

    #[test]
    fn mac_addresses() {
        assert_eq!(MacAddr::parse("02:00:00:00:01:00"), Some(A));
        assert_eq!(A.to_string(), "02:00:00:00:01:00");
        assert_eq!(
            MacAddr::parse("AA:bb:0C:dd:EE:ff"),
            Some(MacAddr([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]))
        );
        for bad in [
            "",
            "02:00:00:00:01",
            "02:00:00:00:01:00:",
            "02:00:00:00:01:0g",
            "02-00-00-00-01-00",
            "+2:00:00:00:01:00",
            "02:00:00:00:01:000",
        ] {
            assert_eq!(MacAddr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn device_found() {
        let line = "<3>P2P-DEVICE-FOUND 02:00:00:00:01:00 p2p_dev_addr=02:00:00:00:01:00 \
                    pri_dev_type=1-0050F204-1 name='THALI-0a1b c' config_methods=0x188 \
                    dev_capab=0x25 group_capab=0x0 new=1";
        assert_eq!(
            parse_event(line),
            Some(Event::DeviceFound {
                addr: A,
                name: "THALI-0a1b c".to_string()
            })
        );
        // A quote inside the name does not end it.
        let line = "<3>P2P-DEVICE-FOUND 02:00:00:00:01:00 p2p_dev_addr=02:00:00:00:01:00 \
                    name='it's' config_methods=0x188";
        assert!(
            matches!(parse_event(line), Some(Event::DeviceFound { name, .. }) if name == "it's")
        );
    }

    #[test]
    fn groups() {
        let go = "<3>P2P-GROUP-STARTED p2p-wlan0-0 GO ssid=\"DIRECT-x y\" freq=2412 \
                  passphrase=\"abcdefgh\" go_dev_addr=02:00:00:00:01:00";
        assert_eq!(
            parse_event(go),
            Some(Event::GroupStarted {
                ifname: "p2p-wlan0-0".to_string(),
                role: Role::Go,
                go_dev_addr: Some(A),
            })
        );
        let client = "<3>P2P-GROUP-STARTED p2p-wlan1-0 client ssid=\"DIRECT-xy\" freq=2412 \
                      psk=0123 go_dev_addr=02:00:00:00:01:00 [PERSISTENT]";
        assert!(matches!(
            parse_event(client),
            Some(Event::GroupStarted {
                role: Role::Client,
                ..
            })
        ));
        assert_eq!(
            parse_event("<3>P2P-GROUP-REMOVED p2p-wlan0-0 GO reason=REQUESTED"),
            Some(Event::GroupRemoved {
                ifname: "p2p-wlan0-0".to_string(),
                reason: Some("REQUESTED".to_string())
            })
        );
        // An interface name that could smuggle a command is refused.
        assert!(matches!(
            parse_event("<3>P2P-GROUP-STARTED p2p;reboot GO"),
            Some(Event::Other(_))
        ));
        assert!(matches!(
            parse_event("<3>P2P-GROUP-STARTED abcdefghijklmnop GO"),
            Some(Event::Other(_))
        ));
    }

    #[test]
    fn negotiation_and_stations() {
        assert_eq!(
            parse_event("<3>P2P-GO-NEG-REQUEST 02:00:00:00:01:00 dev_passwd_id=4 go_intent=7"),
            Some(Event::GoNegRequest { addr: A })
        );
        assert_eq!(
            parse_event("<3>P2P-GO-NEG-FAILURE status=1"),
            Some(Event::GoNegFailure { status: Some(1) })
        );
        assert_eq!(
            parse_event("<3>AP-STA-CONNECTED 02:00:00:00:09:00 p2p_dev_addr=02:00:00:00:01:00"),
            Some(Event::StaConnected { addr: A })
        );
        assert_eq!(parse_event("P2P-FIND-STOPPED"), Some(Event::FindStopped));
        assert_eq!(
            parse_event("<3>CTRL-EVENT-SCAN-STARTED "),
            Some(Event::Other("CTRL-EVENT-SCAN-STARTED".to_string()))
        );
        assert_eq!(parse_event(""), None);
        assert_eq!(parse_event(&"x".repeat(MAX_LINE + 1)), None);
    }

    #[test]
    fn replies() {
        let status = "bssid=02:00:00:00:00:00\np2p_device_address=02:00:00:00:01:00\naddress=02:00:00:00:01:00\n";
        assert_eq!(
            reply_field(status, "p2p_device_address").and_then(MacAddr::parse),
            Some(A)
        );
        assert_eq!(reply_field(status, "address"), Some("02:00:00:00:01:00"));
        let peer = "02:00:00:00:01:00\npri_dev_type=1-0050F204-1\ndevice_name=THALI-ab\x01\n";
        assert_eq!(peer_device_name(peer).as_deref(), Some("THALI-ab_"));
        assert_eq!(peer_device_name("FAIL\n"), None);
    }

    #[test]
    fn priority_prefix() {
        assert_eq!(strip_priority("<3>X"), Some("X"));
        assert_eq!(strip_priority("<>X"), None);
        assert_eq!(strip_priority("<123>X"), None);
        assert_eq!(strip_priority("OK"), None);
    }

    proptest! {
        /// Whatever the daemon says, parsing neither panics nor yields an interface name that
        /// is not one.
        #[test]
        fn parsing_never_panics(line in ".{0,300}") {
            if let Some(Event::GroupStarted { ifname, .. } | Event::GroupRemoved { ifname, .. }) =
                parse_event(&line)
            {
                prop_assert!(valid_ifname(&ifname));
            }
            let _ = peer_device_name(&line);
            let _ = MacAddr::parse(&line);
        }

        /// Lines built from the event vocabulary, with fields in any order and quoted noise.
        #[test]
        fn structured_lines_never_panic(
            name in prop::sample::select(vec![
                "P2P-DEVICE-FOUND", "P2P-DEVICE-LOST", "P2P-GO-NEG-REQUEST",
                "P2P-GROUP-STARTED", "P2P-GROUP-REMOVED", "AP-STA-CONNECTED",
                "AP-STA-DISCONNECTED", "P2P-GO-NEG-FAILURE",
            ]),
            words in prop::collection::vec(
                prop_oneof![
                    Just("02:00:00:00:01:00".to_string()),
                    Just("GO".to_string()),
                    Just("client".to_string()),
                    "[a-z0-9-]{0,20}",
                    "[a-z_]{1,12}='[^\n]{0,40}",
                    "[a-z_]{1,12}=\"[^\n]{0,40}\"",
                    "[a-z_]{1,12}=[^ \n]{0,20}",
                ],
                0..12,
            ),
            prefix in prop::option::of("<[0-9]{1,3}>"),
        ) {
            let line = format!("{}{name} {}", prefix.unwrap_or_default(), words.join(" "));
            let _ = parse_event(&line);
        }
    }
}
