//! The application's side of the boot state: how it learns how it was booted, confirms itself,
//! and hands a freshly written image to the bootloader.
//!
//! The application keeps nothing about booting in RAM (the field incident: a RAM flag the new
//! firmware cleared bricked the fleet). [`BootControl::open`] reads the journal from flash, like
//! the bootloader does, and every change is a journal record.
//!
//! ```text
//! let mut boot = BootControl::open(flash, FlashLayout::STM32F429, SlotId::A /* linked for */)?;
//! match boot.info().mode {
//!     BootMode::Trial { .. } | BootMode::Unconfirmed => {
//!         // check in with the server, self-test: only then
//!         boot.mark_confirmed(&keys)?;
//!     }
//!     BootMode::Confirmed => {}
//! }
//! // later, an update: write boot.inactive_slot() through boot.flash_mut(), verify it, then
//! boot.mark_pending(boot.inactive_slot(), &keys)?;   // and reset
//! ```
//!
//! # Security counter
//!
//! [`mark_confirmed`](BootControl::mark_confirmed) appends `Confirmed` *first* and only then a
//! `SecurityCounter` raising the floor to the confirmed image's counter. Raising it earlier (at
//! `mark_pending`, or before `Confirmed`) would let a power cut or a failed trial leave a floor
//! above the old image's counter, and the bootloader would refuse to fall back to it: the revert
//! would end in recovery mode. A cut between the two records leaves the image confirmed with the
//! old floor; the bootloader appends the missing `SecurityCounter` at the next confirmed boot.

use crate::decision::BootMode;
use crate::journal::{BootJournal, BootState, JournalError, RecordKind, Stage};
use crate::layout::FlashLayout;
use crate::verify::{verify_slot, verify_stage1, BootError, VerifiedSlot};
use embedded_storage::nor_flash::NorFlash;
use fota_protocol::image::TrustedKey;
use fota_protocol::SlotId;

/// How the running application was booted, as the journal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// The slot the application runs from (the one it is linked for).
    pub slot: SlotId,
    /// Trial (with the attempt number), confirmed, or unconfirmed.
    pub mode: BootMode,
    /// Trial boots so far of the pending slot (0 when nothing is pending).
    pub attempts: u8,
    /// The lowest security counter the bootloader accepts (the highest confirmed so far).
    pub security_counter: u32,
}

impl BootInfo {
    /// What the journal's `state` says about an application running from `slot`.
    pub fn from_state(state: &BootState, slot: SlotId) -> Self {
        let mode = if state.pending() == Some(slot) {
            BootMode::Trial {
                attempt: state.attempts(),
            }
        } else if state.confirmed() == Some(slot) {
            BootMode::Confirmed
        } else {
            BootMode::Unconfirmed
        };
        Self {
            slot,
            mode,
            attempts: state.attempts(),
            security_counter: state.security_counter(),
        }
    }

    /// Whether the running image is on trial (and must confirm itself or be reverted).
    pub fn is_trial(&self) -> bool {
        matches!(self.mode, BootMode::Trial { .. })
    }
}

/// Why a boot-control request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError<E> {
    /// The journal could not be read or appended to.
    #[error("boot journal: {0}")]
    Journal(JournalError<E>),
    /// The image in `slot` does not verify (or is below the security counter floor).
    #[error("slot {slot}: {error}")]
    Image {
        /// The slot checked.
        slot: SlotId,
        /// Why it was refused.
        error: BootError,
    },
    /// `mark_pending` of the slot the application runs from: it would be overwriting itself.
    #[error("slot {0} is the running slot")]
    RunningSlot(SlotId),
    /// `mark_pending` while the running image is not confirmed: an update only starts from a
    /// confirmed image, so that a failed trial always has a confirmed image to revert to.
    #[error("the running image is not confirmed ({0:?}); confirm it before installing an update")]
    NotConfirmed(BootMode),
    /// The stage-1 in `slot` does not verify as stage-0 would check it.
    #[error("stage-1 slot {slot}: {error}")]
    Stage1 {
        /// The stage-1 slot checked.
        slot: SlotId,
        /// Why it was refused.
        error: BootError,
    },
    /// `mark_stage1_pending` of the stage-1 slot that booted this run, or while a stage-1 trial
    /// is still open (it must prove itself or be reverted first), or with no stage-1 that
    /// stage-0 would fall back to.
    #[error("stage-1 slot {0} cannot take an update now (running, on trial, or no fallback)")]
    Stage1Busy(SlotId),
}

impl<E> From<JournalError<E>> for ControlError<E> {
    fn from(e: JournalError<E>) -> Self {
        ControlError::Journal(e)
    }
}

/// The application's handle on the boot journal.
#[derive(Debug)]
pub struct BootControl<F> {
    journal: BootJournal<F>,
    layout: FlashLayout,
    running: SlotId,
}

impl<F: NorFlash> BootControl<F> {
    /// Read the journal for an application running from `running`.
    pub fn open(
        flash: F,
        layout: FlashLayout,
        running: SlotId,
    ) -> Result<Self, JournalError<F::Error>> {
        Ok(Self {
            journal: BootJournal::open(flash, layout.journal)?,
            layout,
            running,
        })
    }

    /// How this boot happened, from the journal as it is now.
    pub fn info(&self) -> BootInfo {
        BootInfo::from_state(self.journal.state(), self.running)
    }

    /// The slot updates are written to: the one the application does not run from.
    pub fn inactive_slot(&self) -> SlotId {
        self.running.other()
    }

    /// The layout, for the slot offsets.
    pub fn layout(&self) -> &FlashLayout {
        &self.layout
    }

    /// The journal.
    pub fn journal(&self) -> &BootJournal<F> {
        &self.journal
    }

    /// The flash, to write the inactive slot. Do not write the journal's sectors through it.
    pub fn flash_mut(&mut self) -> &mut F {
        self.journal.flash_mut()
    }

    /// Give the flash back.
    pub fn into_flash(self) -> F {
        self.journal.into_flash()
    }

    /// Verify `slot` as the bootloader would, security counter floor included.
    pub fn verify(
        &mut self,
        slot: SlotId,
        keys: &[TrustedKey],
    ) -> Result<VerifiedSlot, ControlError<F::Error>> {
        let floor = self.journal.state().security_counter();
        let offset = self.layout.slot_offset(slot);
        verify_slot(self.journal.flash_mut(), offset, slot, keys)
            .and_then(|image| image.check_floor(floor))
            .map_err(|error| ControlError::Image { slot, error })
    }

    /// The running image reached the server and passed its self-test: make it the confirmed
    /// one. Verifies the running slot (to learn its security counter), appends `Confirmed` if
    /// it is not confirmed yet, then `SecurityCounter` if its counter is above the floor.
    ///
    /// Idempotent: calling it on every healthy boot costs a verification and appends nothing
    /// once both records are in.
    pub fn mark_confirmed(&mut self, keys: &[TrustedKey]) -> Result<(), ControlError<F::Error>> {
        let image = self.verify(self.running, keys)?;
        let state = *self.journal.state();
        if state.confirmed() != Some(self.running) {
            self.journal
                .append(RecordKind::Confirmed { slot: self.running })?;
        }
        if image.security_counter() > state.security_counter() {
            self.journal.append(RecordKind::SecurityCounter {
                value: image.security_counter(),
            })?;
        }
        Ok(())
    }

    /// Which stage-1 booted this run, as stage-0 decided from the journal and the stage-1 slots
    /// (verified here again under `keys`, read-only): the stage-1 on trial once stage-0 has
    /// counted an attempt for it; otherwise the one stage-0 falls back to (the confirmed one, or
    /// the other if none is). `None` only if no stage-1 verifies (then this run did not come
    /// from stage-0's logic at all, e.g. a debugger).
    pub fn running_stage1(&mut self, keys: &[TrustedKey]) -> Option<(SlotId, BootMode)> {
        let state = *self.journal.state();
        let track = state.stage1();
        if let Some(slot) = track.pending().filter(|_| track.attempts() > 0) {
            return Some((
                slot,
                BootMode::Trial {
                    attempt: track.attempts(),
                },
            ));
        }
        let layout = self.layout;
        let decision = crate::decision::fallback(
            Stage::Stage1,
            &state,
            track.pending(),
            &mut |slot| {
                verify_stage1(
                    self.journal.flash_mut(),
                    layout.stage1_offset(slot),
                    slot,
                    keys,
                )
            },
            crate::decision::Refusals::default(),
        );
        decision
            .action
            .target()
            .map(|target| (target.slot(), target.mode))
    }

    /// Verify stage-1 slot `slot` as stage-0 would, version floor included.
    pub fn verify_stage1(
        &mut self,
        slot: SlotId,
        keys: &[TrustedKey],
    ) -> Result<VerifiedSlot, ControlError<F::Error>> {
        let floor = self.journal.state().stage1().floor();
        let offset = self.layout.stage1_offset(slot);
        verify_stage1(self.journal.flash_mut(), offset, slot, keys)
            .and_then(|image| image.check_floor(floor))
            .map_err(|error| ControlError::Stage1 { slot, error })
    }

    /// The application booted through the running stage-1 reached the server and passed its
    /// self-test: that is the stage-1's proof too. If the stage-1 that booted this run is on
    /// trial or unconfirmed, append `Stage1Confirmed` for it, then `Stage1Floor` if its
    /// counter is above the stage-1 floor (the same order, for the same reason, as
    /// [`mark_confirmed`](Self::mark_confirmed)). Returns the stage-1 slot confirmed, `None`
    /// if there was nothing to do. Idempotent.
    pub fn confirm_stage1(
        &mut self,
        keys: &[TrustedKey],
    ) -> Result<Option<SlotId>, ControlError<F::Error>> {
        let Some((slot, mode)) = self.running_stage1(keys) else {
            return Ok(None);
        };
        let image = self.verify_stage1(slot, keys)?;
        let track = *self.journal.state().stage1();
        let mut changed = false;
        if mode != BootMode::Confirmed || track.confirmed() != Some(slot) {
            self.journal.append(RecordKind::Stage1Confirmed { slot })?;
            changed = true;
        }
        if image.security_counter() > track.floor() {
            self.journal.append(RecordKind::Stage1Floor {
                value: image.security_counter(),
            })?;
            changed = true;
        }
        Ok(changed.then_some(slot))
    }

    /// A new stage-1 has been written to stage-1 slot `slot` (not the one that booted this run):
    /// check it from flash as stage-0 will (signature, stage-1 mark for `slot`, vector table,
    /// version floor) and append `Stage1Pending`, so the next reset tries it. Refused while a
    /// stage-1 trial is open, for the running stage-1's slot, and unless the running stage-1 is
    /// confirmed (so a failed trial has a stage-1 to fall back to).
    pub fn mark_stage1_pending(
        &mut self,
        slot: SlotId,
        keys: &[TrustedKey],
    ) -> Result<(), ControlError<F::Error>> {
        match self.running_stage1(keys) {
            Some((running, BootMode::Confirmed)) if running != slot => {}
            _ => return Err(ControlError::Stage1Busy(slot)),
        }
        self.verify_stage1(slot, keys)?;
        self.journal.append(RecordKind::Stage1Pending { slot })?;
        Ok(())
    }

    /// A new image has been written to `slot` (the inactive one) and verified while it
    /// downloaded: check it again from flash and append `Pending`, so the next boot tries it.
    /// Refused for the running slot, while the running image is not confirmed, and for an
    /// image the bootloader would refuse.
    pub fn mark_pending(
        &mut self,
        slot: SlotId,
        keys: &[TrustedKey],
    ) -> Result<(), ControlError<F::Error>> {
        if slot == self.running {
            return Err(ControlError::RunningSlot(slot));
        }
        let info = self.info();
        if info.mode != BootMode::Confirmed {
            return Err(ControlError::NotConfirmed(info.mode));
        }
        self.verify(slot, keys)?;
        self.journal.append(RecordKind::Pending { slot })?;
        Ok(())
    }
}
