#!/usr/bin/env bash
# Guest side of scripts/vm/test-ble (runs inside the test VM): brings up Bluetooth (dbus,
# hci_vhci, `btvirt -L -l2`, bluetoothd) and runs each test binary given, one test at a time
# (they share the two controllers). Exit status: non-zero if bringing up Bluetooth or any
# binary failed. Extra arguments after `--` go to every test binary (a test name filter, say).
#   bash scripts/vm/guest/ble-tests.sh BINARY... [-- TEST-ARGS...]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/vm/guest/bluetooth.sh
. "$here/bluetooth.sh"

bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift

t0=$SECONDS
if ! bluetooth_up 2; then
    echo "ble-tests: Bluetooth did not come up"; tail -n 20 /tmp/bluetoothd.log /tmp/btvirt.log
    exit 1
fi
# The HCI traffic of both controllers, for the failure report (VM_BTMON=1 prints it all).
btmon -w /tmp/hci.btsnoop >/dev/null 2>&1 &
export THALI_BLE_REQUIRED=1
rc=0
for bin in "${bins[@]}"; do
    echo "== $(basename "$bin") (guest uptime $(cut -d' ' -f1 /proc/uptime) s)"
    start=$SECONDS
    "$bin" --test-threads=1 --nocapture "$@" || rc=1
    echo "== $(basename "$bin"): exit $rc after $((SECONDS - start)) s"
done
if [ "$rc" -ne 0 ]; then
    echo "-- bluetoothd log (tail)"; tail -n 30 /tmp/bluetoothd.log
    if [ -n "${VM_OUT:-}" ]; then
        cp /tmp/hci.btsnoop /tmp/bluetoothd.log "$VM_OUT/" 2>/dev/null
        btmon -r /tmp/hci.btsnoop > "$VM_OUT/hci.txt" 2>&1
        echo "-- HCI trace (hci.btsnoop, decoded: hci.txt) and bluetoothd log copied to the run's out dir"
    fi
    echo "-- dmesg (Bluetooth, tail)"; dmesg | grep -i -E 'bluetooth|hci|l2cap' | tail -n 20
fi
echo "ble-tests: done in $((SECONDS - t0)) s in the guest"
exit "$rc"
