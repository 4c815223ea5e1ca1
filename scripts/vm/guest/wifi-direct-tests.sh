#!/usr/bin/env bash
# Guest side of scripts/vm/test-wifi-direct (runs inside the test VM as root):
#
#   wifi-direct-tests.sh TEST_BINARY [TEST ARGS...]
#
# Two simulated radios (mac80211_hwsim radios=2) that hear each other, the second moved into
# network namespace `wd1` (so the two P2P group interfaces are two hosts: without it both
# link-local addresses are local to one stack and traffic never crosses the simulated air),
# one wpa_supplicant per radio with P2P on (Debian 2.10, -Dnl80211; it gives P2P its own device
# interface p2p-dev-wlanN and each group its own interface p2p-wlanN-M), then the Rust test
# (adhoc-wireless/tests/wifi_direct_vm.rs) with both control sockets. No access point anywhere.
#
# Environment: THALI_WIFI_LOG_DIR — where the wpa_supplicant -dd logs and dmesg are kept (default
# /run/vm-out). Exits with the test's status.
set -uo pipefail
test_bin="${1:?usage: wifi-direct-tests.sh TEST_BINARY [ARGS...]}"; shift
logs="${THALI_WIFI_LOG_DIR:-/run/vm-out}"
mkdir -p "$logs"
# wpa_supplicant's debug logs are written to the guest's RAM while the test runs (megabytes
# over the 9p share would slow the emulated machine, and P2P's timers are tight), and copied to
# $logs at the end.
tmplogs=/tmp/wifi-logs
mkdir -p "$tmplogs"
t0=$SECONDS

modprobe mac80211_hwsim radios=2 || { echo "wifi-direct: cannot load mac80211_hwsim"; exit 3; }
for i in $(seq 1 50); do
    [ -e /sys/class/net/wlan0 ] && [ -e /sys/class/net/wlan1 ] && break
    sleep 0.1
done
ip netns add wd1
phy1="$(basename "$(readlink -f /sys/class/net/wlan1/phy80211)")"
iw phy "$phy1" set netns name wd1 || { echo "wifi-direct: cannot move $phy1 into wd1"; exit 3; }
ip netns exec wd1 ip link set lo up

for n in 0 1; do
    mkdir -p "/run/wpa$n"
    cat > "/tmp/p2p$n.conf" <<CONF
ctrl_interface=/run/wpa$n
update_config=0
device_name=THALI-boot$n
device_type=1-0050F204-1
config_methods=push_button
p2p_no_group_iface=0
CONF
done
wpa_supplicant -Dnl80211 -iwlan0 -c/tmp/p2p0.conf -dd -t > "$tmplogs/wpa_supplicant-a.log" 2>&1 &
wpa_a=$!
ip netns exec wd1 wpa_supplicant -Dnl80211 -iwlan1 -c/tmp/p2p1.conf -dd -t \
    > "$tmplogs/wpa_supplicant-b.log" 2>&1 &
wpa_b=$!
# The P2P device's control socket: p2p-dev-wlanN when the driver gives P2P its own device
# (hwsim does), else the station interface's.
ctrl_for() {
    local n="$1" i
    for i in $(seq 1 100); do
        [ -S "/run/wpa$n/p2p-dev-wlan$n" ] && { echo "/run/wpa$n/p2p-dev-wlan$n"; return 0; }
        sleep 0.1
    done
    [ -S "/run/wpa$n/wlan$n" ] && { echo "/run/wpa$n/wlan$n"; return 0; }
    return 1
}
ctrl_a="$(ctrl_for 0)" || { echo "wifi-direct: wpa_supplicant A has no control socket"; tail -n 30 "$tmplogs/wpa_supplicant-a.log"; exit 3; }
ctrl_b="$(ctrl_for 1)" || { echo "wifi-direct: wpa_supplicant B has no control socket"; tail -n 30 "$tmplogs/wpa_supplicant-b.log"; exit 3; }
echo "wifi-direct: radios and wpa_supplicant up after $((SECONDS - t0)) s: A $ctrl_a, B $ctrl_b (in netns wd1)"

status=0
THALI_WPA_CTRL_A="$ctrl_a" THALI_WPA_CTRL_B="$ctrl_b" THALI_WIFI_NETNS_B=wd1 THALI_WIFI_REQUIRED=1 \
    "$test_bin" --nocapture --test-threads 1 "$@" || status=$?

kill "$wpa_a" "$wpa_b" 2>/dev/null
wait "$wpa_a" "$wpa_b" 2>/dev/null
dmesg > "$logs/dmesg.log" 2>/dev/null
cp "$tmplogs"/*.log "$logs/" 2>/dev/null
if [ "$status" -ne 0 ]; then
    for side in a b; do
        echo "---- wpa_supplicant $side: P2P / WPS events (full -dd log in $logs) ----"
        grep -E 'P2P-|AP-STA|WPS-|CTRL-EVENT-(CONNECTED|DISCONNECTED)|FAIL' \
            "$logs/wpa_supplicant-$side.log" | tail -n 40
    done
fi
echo "wifi-direct: done after $((SECONDS - t0)) s, status $status"
exit "$status"
