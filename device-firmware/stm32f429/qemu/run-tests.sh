#!/usr/bin/env bash
# QEMU boot tests for fota's two boot stages and the demo app (qemu-system-arm -M netduinoplus2,
# an STM32F405: the same F4 flash map). Builds stage-0 (fota-stage0), the bootloader as stage-1
# for stage-1 slot A and B (signed with `fota sign --component bootloader`) and the demo app, all
# with the `qemu` feature, signs the demo app for slot A and slot B with a throwaway test key (`fota keygen`, kept under target/, never in
# git), writes boot-journal sectors with qemu/journal-seed (fota-boot's own BootJournal, built for
# the host), loads one composed flash image per scenario (0xFF wherever nothing is loaded: QEMU
# leaves unloaded flash at 0x00), and asserts on the semihosting output of the bootloader (journal
# state, record appended, refusals, slot and mode booted) and of the demo app (its boot info from
# the journal, self-test, mark_confirmed, boot info again).
#
# QEMU drops flash writes: under the `qemu` feature the board's flash driver keeps the journal
# sectors in a RAM overlay for the session (board/src/overlay.rs), shared by the bootloader and
# the app, so the bootloader's Attempt and the app's Confirmed are read back as on a device.
#
# Usage: device-firmware/stm32f429/qemu/run-tests.sh      (exits non-zero if any scenario fails)
# Also prints stage-0's flash size against its budget (sectors 0-1 less the 512-byte identity)
# and each stage-1's against the 64 KB stage-1 image budget; each budget is a scenario.
set -uo pipefail

BOARD="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$BOARD/../.." && pwd)"
OUT="$BOARD/target/qemu-test"
TARGET_DIR="$BOARD/target/thumbv7em-none-eabihf/release"
TIMEOUT="${QEMU_TIMEOUT:-10}"
mkdir -p "$OUT"

die() { echo "run-tests: $*" >&2; exit 2; }

# --- tools ---------------------------------------------------------------------------------
if ! command -v qemu-system-arm >/dev/null; then
    echo "installing qemu-system-arm"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq qemu-system-arm >/dev/null \
        || die "cannot install qemu-system-arm"
fi
rustup target list --installed 2>/dev/null | grep -q thumbv7em-none-eabihf \
    || rustup target add thumbv7em-none-eabihf || die "cannot add thumbv7em-none-eabihf"
OBJCOPY="$(command -v llvm-objcopy || command -v arm-none-eabi-objcopy \
    || ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/rust-objcopy 2>/dev/null | head -1)"
[ -n "$OBJCOPY" ] || die "no objcopy (llvm-objcopy, arm-none-eabi-objcopy or rustup component llvm-tools)"
SIZE="$(command -v llvm-size || command -v arm-none-eabi-size || true)"

fota() { (cd "$ROOT" && cargo run -q -p fota-cli --bin fota -- "$@"); }

# The journal seeder runs on the host: its own workspace, built for the host triple explicitly
# (this directory's .cargo/config.toml selects the thumb target).
HOST="$(rustc -vV | sed -n 's/^host: //p')"
SEED_TARGET="$BOARD/target/journal-seed"
cargo build --release -q --manifest-path "$BOARD/qemu/journal-seed/Cargo.toml" --target "$HOST" \
    --target-dir "$SEED_TARGET" || die "journal-seed build failed"
SEED="$SEED_TARGET/$HOST/release/fota-journal-seed"

# --- test key (throwaway, under target/) ----------------------------------------------------
KEY="$OUT/test-key.pem"
if [ ! -f "$KEY" ] || [ ! -f "$OUT/test-key.pub.pem" ]; then
    fota keygen --out "$KEY" --force || die "fota keygen failed"
fi
export FOTA_TRUSTED_KEY="$OUT/test-key.pub.pem"

# --- sizes against the budgets (device builds: no qemu, no semihosting) ----------------------
# Stage-0: sectors 0-1 less the identity's 512 bytes (its memory.x); a stage-1: its image (0x200
# header, code, TLVs) within 64 KB, so the code within 64 KB - 0x200 - 1 KB (memory-stage1-*.x).
# The linkers enforce both; these figures say by how much each fits.
cd "$BOARD" || die "no $BOARD"
STAGE0_BUDGET=$((32 * 1024 - 512))
STAGE1_BUDGET=$((64 * 1024 - 0x200 - 1024))
flash_bytes() {  # sum of the sections that occupy flash: vector table, text, rodata, data (LMA)
    "$SIZE" -A "$1" | awk '$1==".vector_table"||$1==".text"||$1==".rodata"||$1==".data"{s+=$2} END{print s}'
}
BUDGETS=()   # "name ok|FAIL detail" lines, reported as scenarios below
budget() {  # budget NAME ELF BUDGET BUILD-OK
    local name="$1" elf="$2" limit="$3" built="$4" used
    if [ "$built" -ne 0 ]; then BUDGETS+=("$name FAIL (does not link within $limit bytes)"); return; fi
    used=$(flash_bytes "$elf")
    echo "$name: $used bytes of $limit ($((limit - used)) bytes free)"
    if [ "$used" -le "$limit" ]; then BUDGETS+=("$name ok"); else BUDGETS+=("$name FAIL ($used bytes)"); fi
}
cargo build --release -q -p fota-stage0; budget stage0-fits "$TARGET_DIR/fota-stage0" $STAGE0_BUDGET $?
for s1 in a b; do
    cargo build --release -q -p fota-bootloader --features "stage1-$s1"
    budget "stage1-$s1-fits-64k" "$TARGET_DIR/fota-bootloader" $STAGE1_BUDGET $?
done

# --- builds for QEMU ------------------------------------------------------------------------
# The QEMU builds (semihosting log, RAM journal overlay) link within the same budgets.
cargo build --release -q -p fota-stage0 --features qemu || die "stage-0 (qemu) build failed"
echo "stage-0 size (qemu build, with semihosting): $(flash_bytes "$TARGET_DIR/fota-stage0") bytes of $STAGE0_BUDGET"
"$OBJCOPY" -O binary "$TARGET_DIR/fota-stage0" "$OUT/stage0.bin" || die "objcopy failed"
stage1() {  # stage1 SLOT FEATURES VERSION COUNTER OUT
    cargo build --release -q -p fota-bootloader --features "qemu,stage1-$1$2" \
        || die "stage-1 $1 ($2) build failed"
    cp "$TARGET_DIR/fota-bootloader" "$OUT/$5.elf"
    fota sign --key "$KEY" --component bootloader --stage1-slot "$1" --version "$3" \
        --security-counter "$4" "$OUT/$5.elf" -o "$OUT/$5.bin" >/dev/null \
        || die "fota sign $5 failed"
}
stage1 a "" 1.0.0 2 stage1-a            # the factory stage-1 (floor 2)
stage1 b "" 2.0.0 3 stage1-b            # an update of it
stage1 b "" 0.9.0 1 stage1-b-old        # an old one, below the floor
stage1 b ",test-hang" 2.0.1 3 stage1-b-hang   # an update that hangs
echo "stage-1 size (qemu build, with semihosting): $(flash_bytes "$OUT/stage1-a.elf") bytes of $STAGE1_BUDGET"
python3 - "$OUT/stage1-b.bin" "$OUT/stage1-b-badsig.bin" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
assert data[-68] == 0x24 and data[-66] == 64, "expected the ED25519 TLV last"
data[-1] ^= 0x01
open(sys.argv[2], "wb").write(data)
PY
for slot in a b; do
    cargo build --release -q -p fota-demo-app --features "qemu,slot-$slot" || die "demo app (slot $slot) build failed"
    cp "$TARGET_DIR/fota-demo-app" "$OUT/app-$slot.elf"
    fota sign --key "$KEY" --slot "$slot" --version 1.0.0 --security-counter 1 \
        "$OUT/app-$slot.elf" -o "$OUT/app-$slot.bin" >/dev/null \
        || die "fota sign (slot $slot) failed"
done

# Slot B's build (linked for 0x08060200), signed as if for slot A: what a mislabelled release
# would carry. `fota sign` refuses that, so take B's signed image bytes as they are: its header
# says ROM_FIXED 0x08060000 and its vector table points into B; loaded at A, it must be refused.
cp "$OUT/app-b.bin" "$OUT/app-b-at-a.bin"

# App A with one payload byte flipped (past the 0x200 header, inside the code): the SHA256 TLV
# no longer matches, so the signature (over that hash) proves nothing for these bytes.
python3 - "$OUT/app-a.bin" "$OUT/app-a-bad.bin" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[0x200 + 0x100] ^= 0x01
open(sys.argv[2], "wb").write(data)
PY
# App A with its Ed25519 signature damaged (hash intact): the last TLV is ED25519, 64 bytes.
python3 - "$OUT/app-a.bin" "$OUT/app-a-badsig.bin" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
assert data[-68] == 0x24 and data[-66] == 64, "expected the ED25519 TLV last"
data[-1] ^= 0x01
open(sys.argv[2], "wb").write(data)
PY
# App B with its signature damaged, for a pending B that must be rejected.
python3 - "$OUT/app-b.bin" "$OUT/app-b-badsig.bin" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
assert data[-68] == 0x24 and data[-66] == 64, "expected the ED25519 TLV last"
data[-1] ^= 0x01
open(sys.argv[2], "wb").write(data)
PY
# App B built for slot A (links at 0x08020200, signed for A), to be loaded at slot B.
cp "$OUT/app-a.bin" "$OUT/app-a-at-b.bin"

# Boot-journal sectors (32 KB at 0x08008000), appended record by record by fota-boot itself.
# The factory state of a provisioned device is SecurityCounter 1 + Confirmed A.
seed() {  # seed NAME RECORD...
    local name="$1"; shift
    "$SEED" "$OUT/journal-$name.bin" "$@" 2>/dev/null || die "journal-seed $name failed"
}
seed a-confirmed   counter:1 confirmed:a
seed b-pending     counter:1 confirmed:a pending:b
seed b-attempt-2   counter:1 confirmed:a pending:b attempt:b attempt:b
seed b-attempt-3   counter:1 confirmed:a pending:b attempt:b attempt:b attempt:b
seed floor-2       counter:2 confirmed:a pending:b
# With stage-0's records: stage-1 A confirmed at floor 2, and a stage-1 B pending.
seed s1-a          counter:1 confirmed:a s1floor:2 s1confirmed:a
seed s1-b-pending  counter:1 confirmed:a s1floor:2 s1confirmed:a s1pending:b

# QEMU refuses overlapping -device loader regions, and its unloaded flash reads 0x00, not the
# erased 0xFF. So each scenario loads one 1 MB flash image: 0xFF everywhere (erased journal,
# identity, empty slots, slot padding), stage-0 at 0x08000000, the journal sectors at
# 0x08008000 when seeded, the signed stage-1s at 0x08010000 (A) and 0x080A0000 (B), and the
# signed application images at their slots.
compose() {  # compose OUT JOURNAL|- A-IMAGE|- B-IMAGE|- STAGE1-A|- STAGE1-B|-
    python3 - "$OUT/stage0.bin" "$@" <<'PY'
import sys
boot, out, journal, a, b, s1a, s1b = sys.argv[1:8]
flash = bytearray(b"\xff" * (1024 * 1024))
def put(path, offset, limit):
    data = open(path, "rb").read()
    assert len(data) <= limit, f"{path}: {len(data)} bytes do not fit {limit}"
    flash[offset:offset + len(data)] = data
put(boot, 0, 0x7E00)
if journal != "-": put(journal, 0x8000, 0x8000)
if s1a != "-": put(s1a, 0x10000, 0x10000)
if a != "-": put(a, 0x20000, 0x40000)
if b != "-": put(b, 0x60000, 0x40000)
if s1b != "-": put(s1b, 0xA0000, 0x10000)
open(out, "wb").write(flash)
PY
}

# --- scenarios ------------------------------------------------------------------------------
PASSED=0; FAILED=0
RECOVERY='recovery: no slot verifies'   # what the bootloader prints when nothing can run
STAGE0_RECOVERY='stage-0 recovery: no stage-1 verifies'   # what stage-0 prints
ANY_RECOVERY='recovery: no (slot|stage-1) verifies'
# [S1A=IMAGE|-] [S1B=IMAGE|-] run NAME EXPECT-REGEX REJECT-REGEX JOURNAL|- A-IMAGE|- B-IMAGE|-
# (stage-1 slot A holds stage1-a.bin and B nothing unless S1A / S1B say otherwise)
run() {
    local name="$1" expect="$2" reject="$3" journal="$4" a="$5" b="$6" log="$OUT/$1.log"
    local s1a="${S1A:-stage1-a.bin}" s1b="${S1B:--}"
    [ "$journal" != - ] && journal="$OUT/journal-$journal.bin"
    [ "$a" != - ] && a="$OUT/$a"
    [ "$b" != - ] && b="$OUT/$b"
    [ "$s1a" != - ] && s1a="$OUT/$s1a"
    [ "$s1b" != - ] && s1b="$OUT/$s1b"
    compose "$OUT/$name.flash.bin" "$journal" "$a" "$b" "$s1a" "$s1b" || die "cannot compose $name"
    local args=(-M netduinoplus2 -nographic -monitor none -serial null
        -semihosting-config enable=on,target=native
        -device "loader,file=$OUT/$name.flash.bin,addr=0x08000000")
    # The app exits QEMU itself. Recovery never exits: stop it a second after it says so (the
    # scenarios that expect recovery would otherwise each wait for the whole timeout).
    timeout "$TIMEOUT" qemu-system-arm "${args[@]}" >"$log" 2>&1 &
    local pid=$! rc waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if grep -Eq "$ANY_RECOVERY" "$log" && [ "$waited" -ge 10 ]; then
            kill "$pid" 2>/dev/null
            break
        fi
        grep -Eq "$ANY_RECOVERY" "$log" && waited=$((waited + 1))
        sleep 0.1
    done
    wait "$pid"; rc=$?
    local flat; flat="$(tr '\n' ' ' <"$log")"   # the patterns span lines
    if grep -Eq "$expect" <<<"$flat" && ! grep -Eq "$reject" <<<"$flat"; then
        echo "PASS $name"; PASSED=$((PASSED + 1))
    else
        echo "FAIL $name (qemu exit $rc; wanted /$expect/, not /$reject/):"
        sed 's/^/    /' "$log"
        FAILED=$((FAILED + 1))
    fi
}

# The budgets are tests like the others: a stage that does not fit its flash fails.
for line in "${BUDGETS[@]}"; do
    if [ "${line#* }" = ok ]; then
        echo "PASS ${line%% *}"; PASSED=$((PASSED + 1))
    else
        echo "FAIL $line"; FAILED=$((FAILED + 1))
    fi
done

# What the app prints: its slot and VTOR, its boot info from the journal, the self-test (SysTick
# through its own vector table), and, unless it was confirmed already, mark_confirmed and the boot
# info read back from the journal. It exits QEMU itself; recovery never exits, so the timeout
# ends it.
S='[[:space:]]+'
APP_A="app running from slot A \(VTOR 0x08020200\)"
APP_B="app running from slot B \(VTOR 0x08060200\)"
SELFTEST="self-test ok: systick fired through this image's table"
CONFIRMS="mark_confirmed: ok${S}boot info: slot [AB] confirmed"

# Factory state: an erased journal and A. Nothing confirmed yet, so A runs unconfirmed and
# confirms itself (its first journal append compacts the empty journal into sector 2 first).
run factory-a-only \
    "journal: confirmed -, pending -, attempts 0, security counter 0${S}booting slot A \(unconfirmed\) VTOR 0x08020200${S}${APP_A}${S}boot info: slot A unconfirmed, security counter 0${S}${SELFTEST}.*${CONFIRMS}, security counter 1" \
    'FAILED|appended|slot B' - app-a.bin -
# The journal says A is confirmed: A runs, nothing is appended, B (valid) is not even read.
run a-confirmed \
    "journal: confirmed A, pending -, attempts 0, security counter 1${S}booting slot A \(confirmed\) VTOR 0x08020200${S}${APP_A}${S}boot info: slot A confirmed, security counter 1${S}${SELFTEST}" \
    'FAILED|appended|refused|slot B|mark_confirmed' a-confirmed app-a.bin app-b.bin
# An update: A confirmed, B pending. The Attempt is journaled before the jump; B runs on trial,
# sees it in the journal, passes its self-test and confirms itself.
run b-pending-trial \
    "journal: confirmed A, pending B, attempts 0, security counter 1${S}journal: appended Attempt\(B\)${S}booting slot B \(trial, attempt 1\) VTOR 0x08060200${S}${APP_B}${S}boot info: slot B trial \(attempt 1\), security counter 1${S}${SELFTEST}.*mark_confirmed: ok${S}boot info: slot B confirmed, security counter 1" \
    'FAILED|refused|booting slot A' b-pending app-a.bin app-b.bin
# The third and last trial boot.
run b-pending-third-attempt \
    "journal: confirmed A, pending B, attempts 2, security counter 1${S}journal: appended Attempt\(B\)${S}booting slot B \(trial, attempt 3\).*boot info: slot B trial \(attempt 3\).*${CONFIRMS}" \
    'FAILED|refused|booting slot A' b-attempt-2 app-a.bin app-b.bin
# Three trial boots already recorded and never confirmed (each hung or reset): reverted to A.
run b-pending-3-attempts-reverted \
    "journal: confirmed A, pending B, attempts 3, security counter 1${S}journal: appended Reverted\(B\)${S}booting slot A \(confirmed\) VTOR 0x08020200${S}${APP_A}${S}boot info: slot A confirmed" \
    'FAILED|refused|booting slot B|mark_confirmed' b-attempt-3 app-a.bin app-b.bin
# A pending B whose signature is damaged: rejected (journaled), A runs.
run b-pending-badsig \
    "journal: confirmed A, pending B, attempts 0, security counter 1${S}journal: appended Rejected\(B\)${S}slot B refused: Image\(BadSignature\)${S}booting slot A \(confirmed\) VTOR 0x08020200${S}${APP_A}${S}boot info: slot A confirmed" \
    'FAILED|booting slot B|Attempt' b-pending app-a.bin app-b-badsig.bin
# A pending B that is a build for slot A (signed, but linked for 0x08020200): refused, A runs.
run b-pending-wrong-slot \
    "journal: appended Rejected\(B\)${S}slot B refused: Slot\(WrongLoadAddress\)${S}booting slot A \(confirmed\).*${APP_A}" \
    'FAILED|booting slot B|Attempt' b-pending app-a.bin app-a-at-b.bin
# Anti-rollback: the journal's floor is 2, both images carry security counter 1: nothing runs.
run floor-above-images \
    "slot A refused: SecurityCounter\(below the floor\)${S}slot B refused: SecurityCounter\(below the floor\)${S}${RECOVERY}" \
    'app running|booting slot' floor-2 app-a.bin app-b.bin
# Erased journal, no A: B runs unconfirmed and confirms itself.
run b-only \
    "booting slot B \(unconfirmed\) VTOR 0x08060200${S}${APP_B}${S}boot info: slot B unconfirmed.*${SELFTEST}.*${CONFIRMS}" \
    'FAILED|booting slot A' - - app-b.bin
run a-bad-payload-b-ok \
    "slot A refused: Image\(HashMismatch\)${S}booting slot B \(unconfirmed\).*${APP_B}.*${SELFTEST}" \
    'FAILED|booting slot A' - app-a-bad.bin app-b.bin
run a-badsig-b-ok \
    "slot A refused: Image\(BadSignature\)${S}booting slot B \(unconfirmed\).*${APP_B}.*${SELFTEST}" \
    'FAILED|booting slot A' - app-a-badsig.bin app-b.bin
run wrong-slot \
    "slot A refused: Image\(HashMismatch\)${S}slot B refused: Slot\(WrongLoadAddress\)${S}${RECOVERY}" \
    'app running|booting slot' - app-a-bad.bin app-a-at-b.bin
run b-at-a \
    "slot A refused: Slot\(WrongLoadAddress\).*${RECOVERY}" \
    'app running|booting slot' - app-b-at-a.bin -
run nothing-valid "${RECOVERY}" 'app running|booting slot' - - -
# Nothing valid with a journal that names slots: B is rejected, A is refused, recovery.
run nothing-valid-journal \
    "journal: appended Rejected\(B\)${S}slot A refused: Image\([A-Za-z]+\)${S}slot B refused: Image\([A-Za-z]+\)${S}${RECOVERY}" \
    'app running|booting slot' b-pending - -

# --- two stages (issue 18) ------------------------------------------------------------------
S1_BANNER="fota stage-1"
# Stage-0 boots the confirmed stage-1 A, which boots the confirmed application A; nothing is
# appended, stage-1 B (empty) is never looked at.
run stage0-boots-stage1-a \
    "fota stage-0${S}stage-0 journal: stage-1 confirmed A, pending -, attempts 0, floor 2${S}booting stage-1 A \(confirmed\) VTOR 0x08010200${S}${S1_BANNER} A: RDP.*booting slot A \(confirmed\) VTOR 0x08020200${S}${APP_A}.*boot info: stage-1 A confirmed, floor 2" \
    'FAILED|appended|refused|stage-1 B|confirm_stage1' s1-a app-a.bin -
# A pending stage-1 B: Stage1Attempt before the jump, B on trial boots the application, whose
# self-test is B's proof: confirm_stage1, the floor rises to B's counter 3.
S1B=stage1-b.bin run stage1-b-pending-trial-confirmed \
    "stage-0 journal: stage-1 confirmed A, pending B, attempts 0, floor 2${S}stage-0: appended Stage1Attempt\(B\)${S}booting stage-1 B \(trial, attempt 1\) VTOR 0x080a0200${S}${S1_BANNER} B: RDP.*booting slot A \(confirmed\).*${APP_A}.*boot info: stage-1 B trial \(attempt 1\), floor 2.*confirm_stage1: ok, stage-1 B confirmed${S}boot info: stage-1 B confirmed, floor 3" \
    'FAILED|refused|booting stage-1 A' s1-b-pending app-a.bin -
# A pending stage-1 B whose signature is damaged: rejected before any jump, stage-1 A runs.
S1B=stage1-b-badsig.bin run stage1-b-badsig-refused \
    "stage-0: appended Stage1Rejected\(B\)${S}stage-1 B refused: Image\(BadSignature\)${S}booting stage-1 A \(confirmed\) VTOR 0x08010200${S}${S1_BANNER} A.*${APP_A}" \
    'FAILED|booting stage-1 B|Stage1Attempt' s1-b-pending app-a.bin -
# A pending stage-1 B below the stage-1 floor (counter 1 < 2): refused, stage-1 A runs.
S1B=stage1-b-old.bin run stage1-b-below-floor-refused \
    "stage-0: appended Stage1Rejected\(B\)${S}stage-1 B refused: SecurityCounter\(below the floor\)${S}booting stage-1 A \(confirmed\).*${S1_BANNER} A.*${APP_A}" \
    'FAILED|booting stage-1 B|Stage1Attempt' s1-b-pending app-a.bin -
# Nothing valid in either stage-1 slot: stage-0's recovery state, once (no reset loop, no fault),
# never a jump. Empty slots, then an application image in stage-1 A (signed, not a stage-1) and
# stage-1 A's build in stage-1 B (marked and linked for A).
S1A=- run stage1-nothing-valid \
    "fota stage-0${S}stage-0 journal: stage-1 confirmed A.*stage-1 A refused: Image\([A-Za-z]+\)${S}stage-1 B refused: Image\([A-Za-z]+\)${S}${STAGE0_RECOVERY}" \
    'booting|app running|fota stage-1|panic|fota stage-0.*fota stage-0' s1-a app-a.bin -
S1A=app-a.bin S1B=stage1-a.bin run stage1-nothing-valid-wrong-images \
    "stage-1 A refused: Slot\(NotAStage1\)${S}stage-1 B refused: Slot\(Stage1ForOtherSlot\)${S}${STAGE0_RECOVERY}" \
    'booting|app running|fota stage-1|panic|fota stage-0.*fota stage-0' s1-a app-a.bin -

# A stage-1 B that hangs: three power-ons on one flash that persists (board/src/mirror.rs, as in
# ota-tests.sh), each a trial that hangs (QEMU does not model the IWDG: the harness stops it, as
# the watchdog would reset it); the fourth: stage-0 reverts to stage-1 A, which boots the app.
hang_dir="$OUT/stage1-b-hangs"
rm -rf "$hang_dir"; mkdir -p "$hang_dir"
compose "$hang_dir/flash.bin" "$OUT/journal-s1-b-pending.bin" "$OUT/app-a.bin" - \
    "$OUT/stage1-a.bin" "$OUT/stage1-b-hang.bin" || die "cannot compose stage1-b-hangs"
hang_ok=1
for n in 1 2 3 4; do
    log="$hang_dir/boot-$n.log"
    (cd "$hang_dir" && exec timeout "$TIMEOUT" qemu-system-arm -M netduinoplus2 -nographic \
        -monitor none -serial null -no-reboot -semihosting-config enable=on,target=native \
        -device "loader,file=flash.bin,addr=0x08000000" >"$log" 2>&1) &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if grep -q "hanging" "$log"; then sleep 0.5; pkill -P "$pid" 2>/dev/null; break; fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null
    flat="$(tr '\n' ' ' <"$log")"
    if [ "$n" -le 3 ]; then
        want="stage-0: appended Stage1Attempt\(B\)${S}booting stage-1 B \(trial, attempt $n\) VTOR 0x080a0200${S}${S1_BANNER} B: hanging"
    else
        want="stage-0 journal: stage-1 confirmed A, pending B, attempts 3, floor 2${S}stage-0: appended Stage1Reverted\(B\)${S}booting stage-1 A \(confirmed\).*${S1_BANNER} A.*${APP_A}.*boot info: stage-1 A confirmed, floor 2"
    fi
    if ! grep -Eq "$want" <<<"$flat"; then
        echo "FAIL stage1-b-hangs-abandoned (power-on $n; wanted /$want/):"
        sed 's/^/    /' "$log"
        hang_ok=0
        break
    fi
done
if [ "$hang_ok" -eq 1 ]; then
    echo "PASS stage1-b-hangs-abandoned"; PASSED=$((PASSED + 1))
else
    FAILED=$((FAILED + 1))
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
