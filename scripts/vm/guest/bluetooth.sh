# shellcheck shell=bash
# Sourced by guest scripts (inside the test VM): `bluetooth_up N` starts the system D-Bus, loads
# hci_vhci, runs `btvirt -L -lN` (N emulated LE controllers on one virtual radio, default 2) and
# bluetoothd, and waits until `btmgmt info` lists N powered-on-able controllers. Under load the
# first controller's HCI reset can time out (dmesg: "Opcode 0x0c03 failed: -110"), so btvirt is
# restarted until all N appear (see the project note ble-vm.md). Logs: /tmp/btvirt.log,
# /tmp/bluetoothd.log.

# btmgmt prints nothing without a terminal: give it one (util-linux `script`).
bluetooth_controllers() {
    script -qc 'btmgmt info' /dev/null </dev/null 2>/dev/null | grep -c '^hci[0-9]*:' || true
}

bluetooth_up() {
    local want="${1:-2}" t0=$SECONDS attempt
    mkdir -p /run/dbus
    if [ ! -S /run/dbus/system_bus_socket ]; then
        dbus-daemon --system --fork --nopidfile || { echo "bluetooth: dbus-daemon failed"; return 1; }
    fi
    modprobe hci_vhci || { echo "bluetooth: modprobe hci_vhci failed"; return 1; }
    # bluetoothd first: it then manages each controller as it appears.
    /usr/libexec/bluetooth/bluetoothd --nodetach --experimental >/tmp/bluetoothd.log 2>&1 &
    BLUETOOTHD_PID=$!
    for attempt in 1 2 3 4 5; do
        btvirt -L "-l$want" >/tmp/btvirt.log 2>&1 &
        BTVIRT_PID=$!
        local i
        for i in $(seq 1 40); do
            [ "$(bluetooth_controllers)" -ge "$want" ] && break
            sleep 0.25
        done
        if [ "$(bluetooth_controllers)" -ge "$want" ]; then
            echo "bluetooth: $want controllers up after $((SECONDS - t0)) s (btvirt attempt $attempt)"
            return 0
        fi
        echo "bluetooth: only $(bluetooth_controllers) of $want controllers; restarting btvirt"
        dmesg | grep -i -E 'bluetooth|hci' | tail -n 5
        kill "$BTVIRT_PID" 2>/dev/null; wait "$BTVIRT_PID" 2>/dev/null
        sleep 0.5
    done
    echo "bluetooth: gave up: $(bluetooth_controllers) controllers"
    btmgmt info
    return 1
}
