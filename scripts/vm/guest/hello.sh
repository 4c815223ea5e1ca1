#!/usr/bin/env bash
# A smoke test of the harness: prints what the guest sees, exits with $1 (default 0).
#   scripts/vm/run scripts/vm/guest/hello.sh 3; echo $?   # 3
echo "hello from $(uname -r) in $PWD; args: $*"
ls /dev/vhci 2>/dev/null || echo "(no /dev/vhci before modprobe hci_vhci)"
exit "${1:-0}"
