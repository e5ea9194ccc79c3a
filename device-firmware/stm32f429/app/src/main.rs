//! The reference fota application: what an application on the STM32F429 links to be updated
//! over the air through a SIM7600-class modem.
//!
//! 1. SysTick at 1 ms (the clock for timeouts, backoff and the trial deadline; its firing
//!    through this image's own vector table is also the self-test), the watchdog kicked.
//! 2. The identity from its area (0x0800_7E00): without a valid one, no OTA (it says why),
//!    and a trial image is still reset at its deadline so the bootloader reverts it.
//! 3. The boot state from the journal, the image's own version from its header, RDP/WRP from
//!    the option bytes.
//! 4. Why it reset (RCC_CSR's flags, read and cleared, and the fault record the board's
//!    HardFault handler left in the OTA client's store), reported by the OTA client with the
//!    version and uptime before the reset (a fault's own, with its registers); a panic ends in
//!    an undefined instruction, so the HardFault handler records it as the fault it is.
//! 5. The OTA runtime: `OtaClient` over the modem on USART1 (`fota-modem`, SIM7600 dialect),
//!    the boot journal and the client's state store (sectors 10-11) sharing the flash driver;
//!    then the main loop: poll the runtime, wait as it says (kicking the watchdog), reset when
//!    it says. Built with `FOTA_MQTT_URL`, the modem also holds an MQTT session with that
//!    broker (the device id and token as its account) and the runtime acts on what the server
//!    pushes: a nudge brings the check-in forward, a stop drops the download.
//!
//! With the `qemu` feature the runtime's lines go to semihosting and the program leaves QEMU
//! when it has nothing left to do (the harness's signal that a scenario step is over); with a
//! broker it stays up, waiting for pushed commands, until the harness stops it.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, Ordering};
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use fota_board::clock::{self, Clock};
use fota_board::flash::Flash;
use fota_board::pac;
use fota_board::usart::Usart;
use fota_board::watchdog::Watchdog;
use fota_boot::{BootControl, FlashLayout};
use fota_modem::{ModemConfig, ModemTransport, PushConfig, Sim7600};
use fota_ota_client::{Config, DeviceInfo, FlashPersist, OtaClient, SharedFlash, StoreRegion};
use fota_protocol::identity::MAX_RECORD_LEN;
use fota_protocol::image::{ImageHeader, ImageVersion};
use fota_protocol::messages::{Model, RdpLevel, ResetCause};
use fota_protocol::{SlotId, TrustedKey};
use fota_runtime::{read_identity, Action, Log, Runtime, RuntimeConfig};

include!(concat!(env!("OUT_DIR"), "/trusted_key.rs"));
include!(concat!(env!("OUT_DIR"), "/settings.rs"));

/// The bootloader's version, reported at check-in.
const BOOTLOADER_VERSION: ImageVersion = ImageVersion::new(1, 0, 0, 0);

/// VTOR pointed at this image's own vector table at startup.
static VTOR_OK: AtomicBool = AtomicBool::new(false);

#[exception]
fn SysTick() {
    clock::tick();
}

/// Where this code was linked: its own address says which slot it is in.
fn here() -> u32 {
    here as fn() -> u32 as usize as u32
}

/// The runtime's lines: semihosting under QEMU, nowhere on a device without a debugger.
struct AppLog;

impl Log for AppLog {
    fn line(&mut self, args: core::fmt::Arguments<'_>) {
        #[cfg(feature = "qemu")]
        cortex_m_semihosting::hprintln!("{}", args);
        #[cfg(not(feature = "qemu"))]
        let _ = args;
    }
}

/// The application's self-test before it confirms a trial: VTOR is this image's table and
/// SysTick has fired through it (the field failure was an interrupt through the bootloader's).
fn self_test() -> bool {
    VTOR_OK.load(Ordering::Relaxed) && clock::millis() > 0
}

#[entry]
fn main() -> ! {
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        SCB::sys_reset()
    };
    let mut watchdog = Watchdog::new(dp.IWDG);
    watchdog.kick();
    let reset_flags = fota_board::reset::take_flags(&dp.RCC);
    clock::start(&mut cp.SYST);
    let mut log = AppLog;

    let Some(slot) = SlotId::containing(here()) else {
        log.line(format_args!("app: not running from a slot"));
        halt_and_reset(watchdog)
    };
    VTOR_OK.store(
        cp.SCB.vtor.read() == slot.partition().start + 0x200,
        Ordering::Relaxed,
    );

    let Some(flash) = cortex_m::singleton!(: RefCell<Flash> = RefCell::new(Flash::new(dp.FLASH)))
    else {
        SCB::sys_reset()
    };
    let flash: &'static RefCell<Flash> = flash;
    let Some(identity_buf) = cortex_m::singleton!(: [u8; MAX_RECORD_LEN] = [0; MAX_RECORD_LEN])
    else {
        SCB::sys_reset()
    };

    // The image's own header says its version.
    let mut header = [0u8; 32];
    let version = SharedFlash(flash)
        .read_header(slot, &mut header)
        .unwrap_or(ImageVersion::new(0, 0, 0, 0));
    log.line(format_args!(
        "app {version} running from slot {slot} (VTOR ok: {})",
        VTOR_OK.load(Ordering::Relaxed)
    ));

    let boot = match BootControl::open(SharedFlash(flash), FlashLayout::STM32F429, slot) {
        Ok(boot) => boot,
        Err(e) => {
            log.line(format_args!("app: boot journal unreadable: {e:?}"));
            halt_and_reset(watchdog)
        }
    };
    let identity = match read_identity(&mut SharedFlash(flash), identity_buf) {
        Ok(identity) => identity,
        Err(e) => {
            log.line(format_args!("ota: {e}; OTA disabled"));
            without_ota(boot.info().is_trial(), Clock::new(watchdog), &mut log)
        }
    };
    log.line(format_args!(
        "ota: device {} model {} server {}",
        identity.device_id,
        identity.model,
        identity.base_url()
    ));
    let Some(key) = TRUSTED_KEY.and_then(|k| TrustedKey::from_bytes(&k).ok()) else {
        log.line(format_args!(
            "ota: no trusted key compiled in; OTA disabled"
        ));
        without_ota(boot.info().is_trial(), Clock::new(watchdog), &mut log)
    };
    let Some(keys) = cortex_m::singleton!(: [TrustedKey; 1] = [key]) else {
        SCB::sys_reset()
    };

    let protection = flash.borrow_mut().protection();
    let mut model = Model::new();
    let _ = model.push_str(identity.model);
    let info = DeviceInfo {
        model,
        firmware_version: version,
        bootloader_version: BOOTLOADER_VERSION,
        rdp_level: RdpLevel::from_option_byte(protection.rdp),
        wrp_mask: u32::from(protection.wrp_mask),
    };

    #[cfg(not(feature = "fault-no-network"))]
    let serial = Usart::usart1(dp.USART1, &dp.RCC, &dp.GPIOA);
    #[cfg(feature = "fault-no-network")]
    let serial = Usart::usart2(dp.USART2, &dp.RCC, &dp.GPIOA);
    let modem = ModemConfig::new(identity.base_url(), identity.device_id, identity.token, APN);
    let mut transport: ModemTransport<'static, Usart, Clock, Sim7600> =
        ModemTransport::new(serial, Clock::new(watchdog), modem);
    if !MQTT_URL.is_empty() {
        match PushConfig::from_url(MQTT_URL).map(|push| transport.enable_push(push)) {
            Some(Ok(())) => log.line(format_args!(
                "ota: push commands from mqtt broker {MQTT_URL}"
            )),
            Some(Err(e)) => log.line(format_args!("ota: mqtt: {e}; polling only")),
            None => log.line(format_args!("ota: mqtt: bad broker URL; polling only")),
        }
    }
    let store = FlashPersist::open(SharedFlash(flash), StoreRegion::STM32F429);
    let mut client = OtaClient::new(
        transport,
        boot,
        store,
        info,
        &keys[..],
        Config {
            max_fetch_failures: 5,
            chunk_len: 1016,
            ..Config::default()
        },
    );
    // The fault handler's record, if the last run faulted: the software reset it asked for
    // decodes as a fault (and the client reports the record once).
    let recorded = client.recorded_fault().map(|fault| {
        log.line(format_args!(
            "ota: the last run faulted: {} after {} s: {fault}",
            fault.version, fault.uptime_s
        ));
        ResetCause::Fault
    });
    client.boot_reset(ResetCause::from_rcc_csr(reset_flags, recorded), None);
    let config = RuntimeConfig {
        trial_deadline_ms: TRIAL_DEADLINE_MS,
        // Each device its own share of a nudge's jitter (FNV-1a of its id).
        jitter_seed: identity.device_id.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        }) ^ clock::millis(),
        ..RuntimeConfig::default()
    };
    let mut runtime = Runtime::new(client, config, self_test, clock::millis().into(), &mut log);

    let mut push_up = Some(false);
    // Under QEMU: "ota: idle" once per idle spell (a push build stays up while idle).
    #[cfg(feature = "qemu")]
    let mut idle_said = false;
    loop {
        let now = now(&mut runtime);
        let action = runtime.poll(now, &mut log);
        let up = runtime.client().transport().push_connected();
        if up != push_up {
            let stats = runtime.client().transport().push_stats();
            match up {
                Some(true) => log.line(format_args!(
                    "mqtt: connected, subscribed to fota/d/{}/cmd",
                    identity.device_id
                )),
                Some(false) => log.line(format_args!(
                    "mqtt: not connected ({} lost, {} failed attempts); retrying with backoff",
                    stats.connections_lost, stats.connect_failures
                )),
                None => {}
            }
            push_up = up;
        }
        #[cfg(feature = "qemu")]
        if !matches!(action, Action::Idle(_)) {
            idle_said = false;
        }
        match action {
            Action::Continue => {}
            // Waits count from when the poll started: a request that blocked for a while has
            // used up part of them (the trial deadline stays on time).
            Action::Wait(ms) => wait_until(&mut runtime, now + ms.min(1_000)),
            Action::Idle(ms) => {
                #[cfg(feature = "fault-crash-after-confirm")]
                if runtime.client().boot().info().mode == fota_boot::BootMode::Confirmed {
                    panic!("crashing on purpose");
                }
                #[cfg(feature = "qemu")]
                {
                    if !idle_said {
                        log.line(format_args!("ota: idle"));
                        if up.is_none() {
                            cortex_m_semihosting::debug::exit(
                                cortex_m_semihosting::debug::EXIT_SUCCESS,
                            );
                        }
                    }
                    idle_said = true;
                }
                wait_until(&mut runtime, now + ms.min(1_000));
            }
            Action::Reset(reason) => {
                log.line(format_args!("ota: reset ({reason:?})"));
                SCB::sys_reset()
            }
        }
    }
}

type App = Runtime<
    'static,
    ModemTransport<'static, Usart, Clock, Sim7600>,
    SharedFlash<'static, Flash>,
    FlashPersist<SharedFlash<'static, Flash>>,
>;

fn clock(runtime: &mut App) -> &mut Clock {
    runtime.client_mut().transport_mut().at().clock()
}

fn now(runtime: &mut App) -> u64 {
    clock(runtime).now()
}

/// Sleep until `until` (woken by SysTick every millisecond), feeding the watchdog.
fn wait_until(runtime: &mut App, until: u64) {
    while now(runtime) < until {
        clock(runtime).kick();
        cortex_m::asm::wfi();
    }
}

/// No OTA (no identity or no key): the application would run its own job here. A trial image
/// still resets at its deadline: it cannot confirm itself, so the bootloader will revert it.
fn without_ota(trial: bool, mut clock: Clock, log: &mut AppLog) -> ! {
    #[cfg(feature = "qemu")]
    if !trial {
        log.line(format_args!("ota: idle"));
        cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_SUCCESS);
    }
    loop {
        clock.kick();
        if trial && clock.now() >= TRIAL_DEADLINE_MS {
            log.line(format_args!("ota: trial deadline without OTA; resetting"));
            SCB::sys_reset()
        }
        cortex_m::asm::wfi();
    }
}

/// Something is badly wrong with this image: keep the watchdog fed for a moment so the message
/// gets out, then reset (a trial image counts an attempt and is reverted).
fn halt_and_reset(mut watchdog: Watchdog) -> ! {
    watchdog.kick();
    SCB::sys_reset()
}

/// Reading the image header through the shared flash.
trait ReadHeader {
    fn read_header(&mut self, slot: SlotId, buf: &mut [u8; 32]) -> Option<ImageVersion>;
}

impl ReadHeader for SharedFlash<'_, Flash> {
    fn read_header(&mut self, slot: SlotId, buf: &mut [u8; 32]) -> Option<ImageVersion> {
        use embedded_storage::nor_flash::ReadNorFlash;
        self.read(FlashLayout::STM32F429.slot_offset(slot), buf)
            .ok()?;
        ImageHeader::parse(buf).ok().map(|h| h.version)
    }
}

/// A panic is a fault: end in a permanently undefined instruction, so the board's HardFault
/// handler records it (CFSR.UNDEFINSTR, the PC inside this handler, the version and uptime) in
/// the OTA client's store and resets, and the next boot reports a `fault` reset against this
/// image, like any other fault. (Where the record cannot be written, that handler waits for the
/// watchdog, so a panic is never reported as a requested reset.)
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    AppLog.line(format_args!("app panic: {}", info.message()));
    cortex_m::asm::udf()
}
