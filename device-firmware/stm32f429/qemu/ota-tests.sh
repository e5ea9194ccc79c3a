#!/usr/bin/env bash
# Whole update cycles in QEMU: the real stage-0, bootloader (stage-1 A) and application images
# (device-firmware/stm32f429/app, the `qemu` feature) on qemu-system-arm -M netduinoplus2, the
# modem on USART1 through a QEMU chardev socket to the host modem emulator (SIM7600 dialect),
# which makes real HTTP requests to a real `fota serve` on SQLite. Operators' steps go through
# the `fota` CLI (register, identity, release upload, rollout start and status).
#
# QEMU cannot program flash: the `qemu` build mirrors every flash write to the scenario's
# flash.bin through semihosting, and runs with -no-reboot, so a reset ends QEMU and this script
# starts it again on the flash the last run left ("boot N" below). The application leaves QEMU
# by itself when it has nothing left to do ("ota: idle").
#
# Scenarios (each asserted from the firmware's output and from the server's API):
#   update       v1 in A is offered v2 for B, downloads it through one link drop (resumed at the
#                same offset), verifies, marks B pending, resets; B boots on trial, reaches the
#                server, confirms, reports; the server shows the device confirmed on v2.
#   incident     (continues `update`) v3, a build that boots and never reaches the server, is
#                installed into A; the trial deadline resets it, three attempts, the bootloader
#                reverts to v2, v2 reports the rollback, the rollout halts.
#   power-cut    QEMU is killed in the middle of the download; the next boot resumes it from
#                the offset recorded in flash, and the update completes.
#   verify-fail  an image signed with a key the server trusts and the device does not: never
#                marked pending, reported as verify_failed.
#   crash        a release that confirms and then crashes (a panic once it is idle, which ends
#                in an undefined instruction): the board's HardFault handler records the fault in the OTA client's store
#                and resets; the next boot reports a reset with cause fault, the faulting
#                version and PC, once; the server stores it as an unexpected reset.
#   delta        (issue 19) the server has v1's release, so the offer of v2 carries a delta patch
#                from the running image; at 5 kB/s through the modem emulator the device fetches
#                the patch, rebuilds v2 into slot B from slot A as the base, verifies it as a
#                full download, marks it pending, resets, and B boots on trial and confirms; the
#                emulator served the patch's bytes, not the image's. (`incident` goes through a
#                patch too: v2 is known there, and v3 is a different build.)
#   stage1       a bootloader release (issue 18): v1's application, booted through stage-1 A,
#                reports its stage-1 at check-in, is offered stage-1 1.1.0 for stage-1 slot B,
#                downloads and checks it, marks it pending, resets; stage-0 boots stage-1 B on
#                trial, which boots the application, which reaches the server and confirms
#                stage-1 B; the server shows the bootloader rollout completed.
#   wrp          write protection (option bytes) covers slot B: the device reports its WRP mask
#                at check-in, the server records it protection_blocked and offers nothing, and
#                nothing is written. (The client refuses such an offer too, should a server make
#                it: host-tested in device-firmware/ota-client/tests/client.rs.)
#   push         (issue 15) MQTT through the modem: a Mosquitto of the script's own on a free
#                port (dynamic security: `fota serve --mqtt-url` as its admin creates each
#                device's account when it is registered) and a second `fota serve` pushing
#                through it, devices built with FOTA_MQTT_URL (the SIM7600's AT+CMQTT* commands
#                through the emulator, which holds a real broker connection) polling only once an
#                hour. (1) A rollout starts while the device idles: the server nudges it, it
#                checks in within the jitter (seconds, not the hour), updates and confirms. (2) At
#                4 kB/s, the rollout is aborted once the download passed 8 KB: the server tells
#                the device to stop, it drops the download ("pushed stop"), nothing is installed
#                and the next boot is the old image, confirmed.
#
# Usage: device-firmware/stm32f429/qemu/ota-tests.sh        (exits non-zero if any scenario fails)
# Needs mosquitto (and mosquitto_ctrl, the dynamic-security plugin) for `push`: scripts/setup
# installs them.
# Environment: OTA_BYTES_PER_SEC (emulator line rate, default 100000: fast, for CI),
#              OTA_TRIAL_DEADLINE_MS (default 5000).
set -uo pipefail

BOARD="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$BOARD/../.." && pwd)"
OUT="$BOARD/target/qemu-ota"
TARGET_DIR="$BOARD/target/thumbv7em-none-eabihf/release"
RATE="${OTA_BYTES_PER_SEC:-100000}"
DEADLINE_MS="${OTA_TRIAL_DEADLINE_MS:-5000}"
BOOT_TIMEOUT=60
rm -rf "$OUT"
mkdir -p "$OUT"

die() { echo "ota-tests: $*" >&2; exit 2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

command -v qemu-system-arm >/dev/null || die "qemu-system-arm missing (scripts/setup installs it)"
OBJCOPY="$(command -v llvm-objcopy || command -v arm-none-eabi-objcopy)" || die "no objcopy"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- host tools: the fota binary, the modem emulator, the journal seeder ----------------------
(cd "$ROOT" && cargo build -q --bin fota --bin fota-modem-emulator) || die "host build failed"
HOST_BIN="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug"
FOTA="$HOST_BIN/fota"
EMULATOR="$HOST_BIN/fota-modem-emulator"
SEED_TARGET="$BOARD/target/journal-seed"
cargo build --release -q --manifest-path "$BOARD/qemu/journal-seed/Cargo.toml" --target "$HOST" \
    --target-dir "$SEED_TARGET" || die "journal-seed build failed"
SEED="$SEED_TARGET/$HOST/release/fota-journal-seed"

# --- keys: the one the firmware trusts, and one only the server trusts ------------------------
KEYS="$BOARD/target/qemu-test"
mkdir -p "$KEYS"
[ -f "$KEYS/test-key.pub.pem" ] || "$FOTA" keygen --out "$KEYS/test-key.pem" --force >/dev/null || die "keygen failed"
"$FOTA" keygen --out "$OUT/other-key.pem" --force >/dev/null || die "keygen failed"
export FOTA_TRUSTED_KEY="$KEYS/test-key.pub.pem"

# --- firmware ----------------------------------------------------------------------------------
cd "$BOARD" || die "no $BOARD"
# Stage-0 at 0x08000000 and the bootloader as stage-1 A (signed, in sector 4), as a factory
# programs them.
cargo build --release -q -p fota-stage0 --features qemu || die "stage-0 build failed"
"$OBJCOPY" -O binary "$TARGET_DIR/fota-stage0" "$OUT/stage0.bin" || die "objcopy failed"
cargo build --release -q -p fota-bootloader --features qemu,stage1-a || die "bootloader build failed"
"$FOTA" sign --key "$KEYS/test-key.pem" --component bootloader --stage1-slot a --version 1.0.0 \
    --security-counter 1 "$TARGET_DIR/fota-bootloader" -o "$OUT/stage1-a.bin" >/dev/null \
    || die "fota sign stage-1 A failed"
export FOTA_TRIAL_DEADLINE_MS="$DEADLINE_MS"
for slot in a b; do
    cargo build --release -q -p fota-app --features "qemu,slot-$slot" || die "app build failed"
    cp "$TARGET_DIR/fota-app" "$OUT/app-$slot.elf"
    cargo build --release -q -p fota-app --features "qemu,slot-$slot,fault-no-network" || die "app build failed"
    cp "$TARGET_DIR/fota-app" "$OUT/app-fault-$slot.elf"
    cargo build --release -q -p fota-app --features "qemu,slot-$slot,fault-crash-after-confirm" || die "app build failed"
    cp "$TARGET_DIR/fota-app" "$OUT/app-crash-$slot.elf"
done
sign() {  # sign KEY ELF SLOT VERSION OUT
    "$FOTA" sign --key "$1" --slot "$3" --version "$4" --security-counter 1 "$2" -o "$5" >/dev/null \
        || die "fota sign $5 failed"
}
for slot in a b; do
    sign "$KEYS/test-key.pem" "$OUT/app-$slot.elf" "$slot" 1.0.0 "$OUT/v1-$slot.bin"
    sign "$KEYS/test-key.pem" "$OUT/app-$slot.elf" "$slot" 2.0.0 "$OUT/v2-$slot.bin"
    sign "$KEYS/test-key.pem" "$OUT/app-fault-$slot.elf" "$slot" 3.0.0 "$OUT/v3-$slot.bin"
    sign "$OUT/other-key.pem" "$OUT/app-$slot.elf" "$slot" 2.0.0 "$OUT/v2-other-$slot.bin"
    sign "$KEYS/test-key.pem" "$OUT/app-crash-$slot.elf" "$slot" 4.0.0 "$OUT/v4-$slot.bin"
done
# The push build: the same application holding an MQTT session with the `push` scenario's
# broker, whose port is chosen now (the broker URL is compiled in, like the APN).
MQTT_PORT="$(free_port)"
for slot in a b; do
    FOTA_MQTT_URL="mqtt://127.0.0.1:$MQTT_PORT" cargo build --release -q -p fota-app \
        --features "qemu,slot-$slot" || die "app build (push) failed"
    cp "$TARGET_DIR/fota-app" "$OUT/app-push-$slot.elf"
    sign "$KEYS/test-key.pem" "$OUT/app-push-$slot.elf" "$slot" 1.0.0 "$OUT/v1push-$slot.bin"
    sign "$KEYS/test-key.pem" "$OUT/app-push-$slot.elf" "$slot" 2.0.0 "$OUT/v2push-$slot.bin"
done
# A bootloader release: the same bootloader, 1.1.0, one build per stage-1 slot.
for s1 in a b; do
    cargo build --release -q -p fota-bootloader --features "qemu,stage1-$s1" || die "bootloader build failed"
    "$FOTA" sign --key "$KEYS/test-key.pem" --component bootloader --stage1-slot "$s1" --version 1.1.0 \
        --security-counter 1 "$TARGET_DIR/fota-bootloader" -o "$OUT/s1v11-$s1.bin" >/dev/null \
        || die "fota sign stage-1 1.1.0 $s1 failed"
done
"$SEED" "$OUT/journal.bin" counter:1 confirmed:a s1floor:1 s1confirmed:a 2>/dev/null \
    || die "journal-seed failed"
echo "app size (qemu build): $(stat -c %s "$OUT/v2-a.bin") bytes signed"

# --- the server --------------------------------------------------------------------------------
PORT="$(free_port)"
SERVER="http://127.0.0.1:$PORT"
"$FOTA" serve --listen "127.0.0.1:$PORT" --data-dir "$OUT/server" \
    --trusted-key "$KEYS/test-key.pub.pem" --trusted-key "$OUT/other-key.pub.pem" \
    --sweep-interval-ms 200 --flush-interval-ms 100 >"$OUT/server.log" 2>&1 &
PIDS+=($!)
healthy() { python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$SERVER/healthz" 2>/dev/null; }
for _ in $(seq 100); do healthy && break; sleep 0.1; done
healthy || { cat "$OUT/server.log"; die "fota serve did not start"; }
export FOTA_SERVER="$SERVER"
FOTA_TOKEN="$("$FOTA" token create --name qemu-tests --role admin --data-dir "$OUT/server")" || die "token create failed"
export FOTA_TOKEN

json() {  # json EXPR: evaluate a Python expression on the JSON in stdin (`j` is the document)
    python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"
}

# --- scenario helpers -------------------------------------------------------------------------
PASSED=0; FAILED=0
CURRENT=""
fail() { echo "FAIL $CURRENT: $*"; FAILED=$((FAILED + 1)); }
pass() { echo "PASS $CURRENT"; PASSED=$((PASSED + 1)); }

# new_device NAME [OPTCR] [IMAGE]: provision lamp-NAME of model qemu-NAME, compose its flash
# (stage-0, identity, journal with A and stage-1 A confirmed, stage-1 A, IMAGE (v1) in A, and
# the option-bytes stand-in when given).
new_device() {
    local name="$1" optcr="${2:-}" image="${3:-$OUT/v1-a.bin}" dir="$OUT/$1"
    mkdir -p "$dir"
    echo "lamp-$name,qemu-$name," | "$FOTA" devices register --csv - --out "$dir/tokens.json" >/dev/null \
        || die "register lamp-$name failed"
    "$FOTA" devices identity --id "lamp-$name" --tokens "$dir/tokens.json" --server-url "$SERVER" \
        --model "qemu-$name" -o "$dir/identity.bin" >/dev/null || die "identity lamp-$name failed"
    python3 - "$OUT/stage0.bin" "$OUT/journal.bin" "$dir/identity.bin" "$image" \
        "$dir/flash.bin" "$optcr" "$OUT/stage1-a.bin" <<'PY'
import struct, sys
boot, journal, identity, app, out, optcr, stage1 = sys.argv[1:8]
flash = bytearray(b"\xff" * (1024 * 1024))
def put(path, offset, limit):
    data = open(path, "rb").read()
    assert len(data) <= limit, f"{path}: {len(data)} bytes do not fit {limit}"
    flash[offset:offset + len(data)] = data
put(boot, 0, 0x7E00)
put(journal, 0x8000, 0x8000)
put(identity, 0x7E00, 0x200 - 8)
put(stage1, 0x10000, 0x10000)
put(app, 0x20000, 0x40000)
if optcr:
    flash[0x7ff8:0x8000] = b"OPTB" + struct.pack("<I", int(optcr, 0))
open(out, "wb").write(flash)
PY
}

# emulator NAME ARGS...: start the modem emulator for scenario NAME; sets EPORT.
emulator() {
    local name="$1"; shift
    EPORT="$(free_port)"
    "$EMULATOR" --listen "127.0.0.1:$EPORT" --bytes-per-sec "$RATE" --verbose "$@" \
        >"$OUT/$name/emulator.log" 2>&1 &
    EMU_PID=$!
    PIDS+=($EMU_PID)
    for _ in $(seq 50); do grep -q "SIM7600 on" "$OUT/$name/emulator.log" && return; sleep 0.1; done
    die "emulator for $name did not start"
}

# boot NAME N [KILL-REGEX]: power the device on (QEMU on its flash.bin) until it resets or goes
# idle; with KILL-REGEX, cut the power (kill QEMU) as soon as its output matches.
boot() {
    local name="$1" n="$2" kill_at="${3:-}" dir="$OUT/$1"
    local log="$dir/boot-$n.log"
    (cd "$dir" && exec timeout "$BOOT_TIMEOUT" qemu-system-arm -M netduinoplus2 -nographic \
        -monitor none -no-reboot -semihosting-config enable=on,target=native \
        -chardev "socket,id=modem,host=127.0.0.1,port=$EPORT" -serial chardev:modem \
        -device "loader,file=flash.bin,addr=0x08000000" >"$log" 2>&1) &
    local pid=$!
    if [ -n "$kill_at" ]; then
        while kill -0 "$pid" 2>/dev/null; do
            if grep -Eq "$kill_at" "$log"; then
                pkill -KILL -P "$pid" 2>/dev/null
                echo "    (power cut in boot $n)" >>"$log"
                break
            fi
            sleep 0.05
        done
    fi
    wait "$pid" 2>/dev/null
    sleep 0.2   # let the emulator finish the session
}

# boot_bg NAME N: power the device on in the background (a push build stays up, waiting for
# commands, until power_off); sets QPID.
boot_bg() {
    local dir="$OUT/$1"
    (cd "$dir" && exec timeout "$BOOT_TIMEOUT" qemu-system-arm -M netduinoplus2 -nographic \
        -monitor none -no-reboot -semihosting-config enable=on,target=native \
        -chardev "socket,id=modem,host=127.0.0.1,port=$EPORT" -serial chardev:modem \
        -device "loader,file=flash.bin,addr=0x08000000" >"$dir/boot-$2.log" 2>&1) &
    QPID=$!
}

# wait_log NAME N REGEX SECONDS: wait until boot N's output (lines joined) matches REGEX.
wait_log() {
    local log="$OUT/$1/boot-$2.log" end=$((SECONDS + $4))
    while [ "$SECONDS" -lt "$end" ]; do
        tr '\n' ' ' 2>/dev/null <"$log" | grep -Eq "$3" && return 0
        kill -0 "$QPID" 2>/dev/null || break
        sleep 0.1
    done
    tr '\n' ' ' <"$log" | grep -Eq "$3" && return 0
    fail "boot $2 did not print /$3/ within $4 s"
    sed 's/^/    /' "$log"
    return 1
}

# power_off: cut the power of the device boot_bg started (QEMU, the child of QPID).
power_off() {
    pkill -KILL -P "$QPID" 2>/dev/null
    wait "$QPID" 2>/dev/null
    sleep 0.2   # let the emulator finish the session
}

# expect NAME N REGEX: boot N's output (lines joined) matches REGEX.
expect() {
    local flat; flat="$(tr '\n' ' ' <"$OUT/$1/boot-$2.log")"
    if ! grep -Eq "$3" <<<"$flat"; then
        fail "boot $2 did not print /$3/"
        sed 's/^/    /' "$OUT/$1/boot-$2.log"
        return 1
    fi
}

# rollout NAME RELEASE-PREFIX: upload the release and start a one-stage rollout for qemu-NAME;
# sets ROLLOUT.
rollout() {
    local name="$1" prefix="$2" release
    release="$("$FOTA" release upload --model "qemu-$name" --image-a "$OUT/$prefix-a.bin" \
        --image-b "$OUT/$prefix-b.bin" --notes "$prefix" --json | json 'j["id"]')" \
        || die "upload $prefix for $name failed"
    ROLLOUT="$("$FOTA" rollout start --release "$release" --stages 100 --bake 0 --min-sample 1 \
        --max-failure-rate 0 --deadline 10m --json | json 'j["id"]')" || die "rollout for $name failed"
}

# status ID EXPR: a value from `fota rollout status ID --json`, once the server has settled.
status() {
    local out
    for _ in $(seq 50); do
        out="$("$FOTA" rollout status "$1" --json 2>/dev/null | json "$2")"
        [ -n "${3:-}" ] && [ "$out" != "$3" ] && { sleep 0.2; continue; }
        break
    done
    echo "$out"
}

check() {  # check WHAT ACTUAL EXPECTED
    if [ "$2" != "$3" ]; then fail "$1: $2, expected $3"; return 1; fi
}

# --- update: v1 -> v2 through a link drop ------------------------------------------------------
CURRENT=update
new_device update
emulator update --drop-link-at 8192 --drop-requests 1
boot update 1
expect update 1 "booting slot A \(confirmed\).*app 1\.0\.0 running from slot A.*ota: device lamp-update model qemu-update.*check-in: no offer.*ota: idle" && {
rollout update v2
UPDATE_ROLLOUT=$ROLLOUT
boot update 2
expect update 2 "offer 2\.0\.0 for slot B.*fetch failed \(1 in a row\).*update installed and pending; resetting" &&
boot update 3 &&
expect update 3 "journal: appended Attempt\(B\).*booting slot B \(trial, attempt 1\).*app 2\.0\.0 running from slot B.*on trial \(attempt 1\).*ota: confirmed slot B.*reported [0-9]+ events: trial_boot, confirmed.*ota: idle" &&
grep -q "(fault: link drop)" "$OUT/update/emulator.log" &&
{ [ "$(grep -A1 "(fault: link drop)" "$OUT/update/emulator.log" | grep -o 'from [0-9]*' | sort -u | wc -l)" = 1 ] \
    || fail "the request after the link drop did not resume at the same offset"; } &&
check "rollout state" "$(status "$UPDATE_ROLLOUT" 'j["state"]' completed)" completed &&
check "confirmed devices" "$(status "$UPDATE_ROLLOUT" 'j["counts"]["confirmed"]')" 1 &&
check "device version" "$("$FOTA" devices show lamp-update --json | json 'j["firmware_version"]')" 2.0.0 &&
pass
}
UPDATE_OK=$((FAILED == 0))

# --- incident: v3 never reaches the server; three trials, reverted, rollout halted -------------
CURRENT=incident
if [ "$UPDATE_OK" = 1 ]; then
    rollout update v3
    boot update 4
    expect update 4 "app 2\.0\.0 running from slot B.*offer 3\.0\.0 for slot A.*update installed and pending; resetting" && {
    ok=1
    for attempt in 1 2 3; do
        boot update $((4 + attempt))
        expect update $((4 + attempt)) "booting slot A \(trial, attempt $attempt\).*app 3\.0\.0 running from slot A.*trial deadline: not confirmed.*reset \(TrialDeadline\)" || { ok=0; break; }
    done
    [ "$ok" = 1 ] &&
    boot update 8 &&
    expect update 8 "journal: appended Reverted\(A\).*booting slot B \(confirmed\).*app 2\.0\.0 running from slot B.*rolled back to slot B.*reported [0-9]+ events: rolled_back.*ota: idle" &&
    check "rollout state" "$(status "$ROLLOUT" 'j["state"]' halted)" halted &&
    check "rolled back devices" "$(status "$ROLLOUT" 'j["counts"]["rolled_back"]')" 1 &&
    pass
    }
else
    fail "skipped: the update scenario failed"
fi

# --- power-cut: QEMU killed mid-download, the next boot resumes ---------------------------------
CURRENT=power-cut
new_device power
# Slower here, so the cut lands in the middle of the download.
RATE_SAVED=$RATE; RATE=20000
emulator power
RATE=$RATE_SAVED
boot power 1
expect power 1 "check-in: no offer.*ota: idle" && {
rollout power v2
boot power 2 "ota: download (1[6-9]|[2-9][0-9])[0-9]{3}/"
expect power 2 "offer 2\.0\.0 for slot B.*ota: download .*power cut in boot 2" &&
! grep -q "installed and pending" "$OUT/power/boot-2.log" &&
boot power 3 &&
expect power 3 "resuming download of 2\.0\.0 for slot B.*update installed and pending; resetting" &&
boot power 4 &&
expect power 4 "booting slot B \(trial, attempt 1\).*ota: confirmed slot B.*ota: idle" &&
check "confirmed devices" "$(status "$ROLLOUT" 'j["counts"]["confirmed"]' 1)" 1 &&
# The first artifact request after the cut starts where the recorded offset was, not at 0.
resumed="$(awk '/^session 2:/{s=1} s && /GET .*artifacts.* from/{print; exit}' "$OUT/power/emulator.log" | grep -o 'from [0-9]*' | cut -d' ' -f2)" &&
{ [ "${resumed:-0}" -gt 0 ] || fail "the download after the cut started at ${resumed:-?}, not where it stopped"; } &&
pass
}

# --- verify-fail: signed with a key the device does not trust ----------------------------------
CURRENT=verify-fail
new_device verify
emulator verify
boot verify 1
expect verify 1 "check-in: no offer.*ota: idle" && {
rollout verify v2-other
boot verify 2
expect verify 2 "offer 2\.0\.0 for slot B.*download ended: verify_failed.*reported [0-9]+ events: verify_failed.*ota: idle" &&
! grep -q "installed and pending" "$OUT/verify/boot-2.log" &&
boot verify 3 &&
expect verify 3 "journal: confirmed A, pending -.*booting slot A \(confirmed\).*app 1\.0\.0" &&
check "failed devices" "$(status "$ROLLOUT" 'j["counts"]["failed"]' 1)" 1 &&
pass
}

# --- crash: confirms, then faults; the fault record makes the next boot report `fault` --------
CURRENT=crash
new_device crash
emulator crash
boot crash 1
expect crash 1 "check-in: no offer.*ota: idle" && {
rollout crash v4
boot crash 2
expect crash 2 "offer 4\.0\.0 for slot B.*update installed and pending; resetting" &&
boot crash 3 &&
expect crash 3 "booting slot B \(trial, attempt 1\).*app 4\.0\.0 running from slot B.*ota: confirmed slot B.*app panic: crashing on purpose.*fault: 4\.0\.0 after [0-9]+ s: UNDEFINSTR pc 0x080[67][0-9a-f]{4} .* recorded, resetting" &&
boot crash 4 &&
expect crash 4 "booting slot B \(confirmed\).*ota: the last run faulted: 4\.0\.0 after [0-9]+ s: UNDEFINSTR pc 0x080[67].*reported [0-9]+ events: reset.*crashing on purpose.*recorded, resetting" &&
# Read once: boot 5 reports boot 4's fault, not boot 3's again.
boot crash 5 &&
expect crash 5 "ota: the last run faulted: 4\.0\.0.*reported 1 events: reset" &&
check "fault resets stored" "$("$FOTA" devices show lamp-crash --json \
    | json 'sum(1 for e in j["events"] if e["kind"] == "reset" and e["version"] == "4.0.0" and e["reason"].startswith("fault after ") and "UNDEFINSTR pc 0x080" in e["reason"])')" 2 &&
pass
}

# --- delta: v1 -> v2 rebuilt from a delta patch, at 5 kB/s --------------------------------------
CURRENT=delta
new_device delta
RATE_DELTA=5000
RATE_SAVED=$RATE; RATE=$RATE_DELTA
emulator delta
RATE=$RATE_SAVED
boot delta 1
expect delta 1 "check-in: no offer.*ota: idle" && {
# The release the device runs, so the server knows its base.
"$FOTA" release upload --model qemu-delta --image-a "$OUT/v1-a.bin" --image-b "$OUT/v1-b.bin" \
    --notes v1 --json >/dev/null || die "upload v1 for delta failed"
rollout delta v2
started=$(date +%s.%N)
boot delta 2
elapsed=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
expect delta 2 "offer 2\.0\.0 for slot B \(([0-9]+) bytes.*rebuilding it from a [0-9]+-byte delta patch of the running image.*update installed and pending; resetting" &&
! grep -q "full image" "$OUT/delta/boot-2.log" &&
boot delta 3 &&
expect delta 3 "booting slot B \(trial, attempt 1\).*app 2\.0\.0 running from slot B.*ota: confirmed slot B.*ota: idle" &&
check "rollout state" "$(status "$ROLLOUT" 'j["state"]' completed)" completed &&
check "confirmed devices" "$(status "$ROLLOUT" 'j["counts"]["confirmed"]')" 1 &&
{
    full=$(stat -c %s "$OUT/v2-b.bin")
    patch=$(grep -o 'rebuilding it from a [0-9]*-byte' "$OUT/delta/boot-2.log" | grep -o '[0-9]*')
    # Boot 2's session: what the emulator carried of artifacts.
    carried=$(grep -o '^session 2: .* artifact [0-9]*' "$OUT/delta/emulator.log" | grep -o '[0-9]*$')
    echo "    delta: the patch is $patch bytes for a $full-byte image; boot 2 carried $carried artifact bytes at $RATE_DELTA B/s in ${elapsed} s (the full image alone: $((full / RATE_DELTA)) s)"
    [ -n "$carried" ] && [ "$carried" -ge "$patch" ] && [ "$carried" -lt "$full" ] \
        || fail "boot 2 carried ${carried:-?} artifact bytes: not the ${patch:-?}-byte patch"
} &&
pass
}

# --- stage1: a bootloader release, installed into stage-1 slot B and confirmed ----------------------
CURRENT=stage1
new_device stage1
emulator stage1
boot stage1 1
expect stage1 1 "booting stage-1 A \(confirmed\).*booted through stage-1 slot A 1\.0\.0 \(confirmed\).*check-in: no offer.*ota: idle" && {
rollout stage1 s1v11
boot stage1 2
expect stage1 2 "offer 1\.1\.0 for stage-1 slot B.*update installed and pending; resetting" &&
boot stage1 3 &&
expect stage1 3 "stage-0: appended Stage1Attempt\(B\).*booting stage-1 B \(trial, attempt 1\).*app 1\.0\.0 running from slot A.*booted through stage-1 slot B 1\.1\.0 \(trial.*ota: confirmed stage-1 slot B.*reported [0-9]+ events: .*confirmed.*ota: idle" &&
boot stage1 4 &&
expect stage1 4 "booting stage-1 B \(confirmed\).*booted through stage-1 slot B 1\.1\.0 \(confirmed\).*check-in: no offer.*ota: idle" &&
check "rollout state" "$(status "$ROLLOUT" 'j["state"]' completed)" completed &&
check "rollout component" "$(status "$ROLLOUT" 'j["component"]')" bootloader &&
check "confirmed devices" "$(status "$ROLLOUT" 'j["counts"]["confirmed"]')" 1 &&
check "bootloader version" "$("$FOTA" devices show lamp-stage1 --json | json 'j["bootloader_version"]')" 1.1.0 &&
pass
}

# --- wrp: slot B write-protected ----------------------------------------------------------------
CURRENT=wrp
# OPTCR: nWRP with sectors 7 and 8 (slot B) protected, RDP level 0.
new_device wrp 0x0E7FAAED
emulator wrp
boot wrp 1
expect wrp 1 "check-in: no offer.*ota: idle" && {
rollout wrp v2
boot wrp 2
expect wrp 2 "WRP mask 0x180.*check-in: no offer.*ota: idle" &&
{ python3 - "$OUT/wrp/flash.bin" <<'PY' || { fail "slot B was written"; false; }
import sys
flash = open(sys.argv[1], "rb").read()
sys.exit(0 if flash[0x60000:0xA0000] == b"\xff" * 0x40000 else 1)
PY
} &&
check "protection_blocked devices" "$(status "$ROLLOUT" 'j["counts"]["protection_blocked"]' 1)" 1 &&
pass
}

# --- push: MQTT through the modem: a nudge brings the update, an abort stops a download ---------
CURRENT=push
# The scenario's broker, with dynamic security and an admin account for the server.
start_broker() {
    local dir="$OUT/broker" plugin user=""
    mkdir -p "$dir"
    command -v mosquitto >/dev/null && command -v mosquitto_ctrl >/dev/null || return 1
    plugin="$(ls /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so \
        /usr/local/lib/mosquitto_dynamic_security.so 2>/dev/null | head -1)"
    [ -n "$plugin" ] || return 1
    MQTT_ADMIN_PW="pw-$$"
    printf '%s\n%s\n' "$MQTT_ADMIN_PW" "$MQTT_ADMIN_PW" \
        | mosquitto_ctrl dynsec init "$dir/dynamic-security.json" fota-admin >/dev/null 2>&1 || return 1
    [ "$(id -u)" = 0 ] && user="user root"
    printf '%s\nlistener %s 127.0.0.1\nallow_anonymous false\nplugin %s\nplugin_opt_config_file %s\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n' \
        "$user" "$MQTT_PORT" "$plugin" "$dir/dynamic-security.json" >"$dir/mosquitto.conf"
    mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" \
            "$MQTT_PORT" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
push_scenario() {
    start_broker || { fail "no broker: mosquitto (with mosquitto_ctrl and dynamic security) is needed"; return; }
    # A server that pushes through it; devices poll once an hour (the server's default, said
    # here), so only a push explains a check-in within seconds.
    local port; port="$(free_port)"
    SERVER="http://127.0.0.1:$port"
    "$FOTA" serve --listen "127.0.0.1:$port" --data-dir "$OUT/push-server" \
        --trusted-key "$KEYS/test-key.pub.pem" --sweep-interval-ms 200 --flush-interval-ms 100 \
        --poll-interval-s 3600 --mqtt-url "mqtt://fota-admin:$MQTT_ADMIN_PW@127.0.0.1:$MQTT_PORT" \
        --mqtt-jitter-s 3 >"$OUT/push-server.log" 2>&1 &
    PIDS+=($!)
    local ready=""
    for _ in $(seq 100); do
        ready="$(python3 -c "import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1], timeout=1)).get('mqtt'))" "$SERVER/readyz" 2>/dev/null)"
        [ "$ready" = up ] && break
        sleep 0.1
    done
    [ "$ready" = up ] || { cat "$OUT/push-server.log"; fail "the push server's broker link is not up"; return; }
    export FOTA_SERVER="$SERVER"
    FOTA_TOKEN="$("$FOTA" token create --name qemu-push --role admin --data-dir "$OUT/push-server")" \
        || die "token create (push) failed"
    export FOTA_TOKEN

    # (1) The nudge: the device idles on its hourly poll; a rollout starts; it checks in at once.
    new_device push "" "$OUT/v1push-a.bin"
    emulator push
    boot_bg push 1
    wait_log push 1 "mqtt: connected, subscribed to fota/d/lamp-push/cmd.*ota: idle" 20 || { power_off; return; }
    grep -q "check-in: no offer" "$OUT/push/boot-1.log" || { fail "boot 1 did not check in"; power_off; return; }
    rollout push v2push
    local started; started=$(date +%s.%N)
    wait_log push 1 "ota: pushed check_in \(jitter 3 s\): checking in within [0-3] s.*offer 2\.0\.0 for slot B" 15 \
        || { power_off; return; }
    local took; took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
    wait_log push 1 "offer 2\.0\.0 for slot B.*update installed and pending; resetting" 40 || { power_off; return; }
    wait "$QPID" 2>/dev/null   # the reset ends QEMU
    echo "    push: nudged and offered ${took} s after the rollout started (poll interval 3600 s, jitter 3 s)"
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 10 else 1)" "$took" \
        || { fail "offered ${took} s after the rollout started: not a push"; return; }
    grep -q 'modem: mqtt publish on fota/d/lamp-push/cmd: {"kind":"check_in"' "$OUT/push/emulator.log" \
        || { fail "the emulator passed no nudge"; return; }
    boot_bg push 2
    wait_log push 2 "booting slot B \(trial, attempt 1\).*app 2\.0\.0 running from slot B.*ota: confirmed slot B.*reported [0-9]+ events: trial_boot, confirmed.*ota: idle" 30 \
        || { power_off; return; }
    power_off
    check "rollout state" "$(status "$ROLLOUT" 'j["state"]' completed)" completed || return
    check "device version" "$("$FOTA" devices show lamp-push --json | json 'j["firmware_version"]')" 2.0.0 || return

    # (2) The stop: at 4 kB/s the rollout is aborted mid-download; the device drops it.
    new_device pushstop "" "$OUT/v1push-a.bin"
    local rate_saved=$RATE; RATE=4000
    emulator pushstop
    RATE=$rate_saved
    boot_bg pushstop 1
    wait_log pushstop 1 "mqtt: connected, subscribed to fota/d/lamp-pushstop/cmd.*ota: idle" 20 || { power_off; return; }
    rollout pushstop v2push
    wait_log pushstop 1 "offer 2\.0\.0 for slot B.*ota: download ([89]|[1-9][0-9])[0-9]{3}/" 30 || { power_off; return; }
    "$FOTA" rollout abort "$ROLLOUT" >/dev/null || { fail "rollout abort failed"; power_off; return; }
    wait_log pushstop 1 "ota: pushed stop of rollout $ROLLOUT: download dropped.*ota: idle" 15 || { power_off; return; }
    power_off
    ! grep -q "installed and pending" "$OUT/pushstop/boot-1.log" || { fail "installed after the stop"; return; }
    grep -q 'modem: mqtt publish on fota/d/lamp-pushstop/cmd: {"kind":"stop"' "$OUT/pushstop/emulator.log" \
        || { fail "the emulator passed no stop"; return; }
    local size carried
    size=$(stat -c %s "$OUT/v2push-b.bin")
    carried=$(grep -o '^session 1: .* artifact [0-9]*' "$OUT/pushstop/emulator.log" | grep -o '[0-9]*$')
    echo "    push: stopped after ${carried:-?} of $size bytes"
    [ -n "$carried" ] && [ "$carried" -lt "$size" ] || { fail "the download was not cut short (${carried:-?} of $size)"; return; }
    # Nothing pending: the next boot is the old image, confirmed.
    boot_bg pushstop 2
    wait_log pushstop 2 "journal: confirmed A, pending -.*booting slot A \(confirmed\).*app 1\.0\.0 running from slot A.*ota: idle" 20 \
        || { power_off; return; }
    power_off
    check "rollout state" "$(status "$ROLLOUT" 'j["state"]' aborted)" aborted || return
    check "device version" "$("$FOTA" devices show lamp-pushstop --json | json 'j["firmware_version"]')" 1.0.0 || return
    pass
}
push_scenario

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
