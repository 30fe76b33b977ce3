//! The handles C holds and what they name: the opaque types, their
//! registries, and the state behind each handle (a port's live messages,
//! its reservation, the message slots it keeps). The `extern "C"` files
//! (`port`, `message`, `process`, `rendezvous`) are built on this one.

use std::cell::{Cell, RefCell};

use shmport_core::{Message, MessagePort, Reservation};

use crate::boundary::{handle, to_ptr};
use crate::no_memory;
use crate::registry::{Kind, Registry, Vacant};
use crate::status::shmport_status::{self, *};

/// A received message. Opaque; made by `shmport_port_recv`, released by
/// `shmport_message_free` (exactly once, before its port is closed or
/// posted).
pub struct shmport_message {
    _opaque: [u8; 0],
}

/// What a message handle names: the message and the port it borrows.
pub(crate) struct MessageState {
    /// Borrows `port.port`; the port is not removed while this lives (its
    /// `live` count is non-zero).
    pub(crate) msg: Message<'static>,
    pub(crate) port: &'static PortState,
}

pub(crate) static MESSAGES: Registry<MessageState> = Registry::new(Kind::Message);

/// The message a handle names, for the current call only.
pub(crate) fn message(
    msg: *mut shmport_message,
) -> Result<&'static mut MessageState, shmport_status> {
    let h = handle(msg)?;
    // SAFETY: used only during the current call (the contract of
    // `Registry::get_mut`); the C contract keeps other threads off this
    // message and its port during the call.
    Ok(unsafe { MESSAGES.get_mut(h) }?)
}

/// A port: one end of a channel. Opaque; made by `shmport_channel_new`,
/// `shmport_spawn`, `shmport_port_from_parent`, `shmport_port_from_fds`,
/// `shmport_connect`, `shmport_incoming_accept` or
/// `shmport_message_take_ports`; released by `shmport_port_close`, by
/// posting it in a transfer list, or by `shmport_port_into_fds`.
pub struct shmport_port {
    _opaque: [u8; 0],
}

/// What a port handle names.
pub(crate) struct PortState {
    /// The live reservation, if any. It borrows `port`, so it is declared
    /// (and dropped) first; a port is never removed while it is `Some`.
    pub(crate) reservation: RefCell<Option<Reservation<'static>>>,
    /// Messages received from this port and not yet freed; a port is never
    /// removed while this is non-zero (they borrow `port`).
    live: Cell<usize>,
    /// A free message slot kept for this port's next message, so that
    /// receiving takes no lock: the one its last freed message left.
    spare: Cell<Option<Vacant<MessageState>>>,
    /// More kept slots, when several messages were held at once.
    spares: RefCell<Vec<Vacant<MessageState>>>,
    /// The handle of the port set this port is in, 0 for none; a port is
    /// never removed while it is in a set (the set holds `&port`).
    pub(crate) in_set: Cell<u64>,
    pub(crate) port: MessagePort,
}

impl PortState {
    pub(crate) fn new(port: MessagePort) -> PortState {
        PortState {
            reservation: RefCell::new(None),
            live: Cell::new(0),
            spare: Cell::new(None),
            spares: RefCell::new(Vec::new()),
            in_set: Cell::new(0),
            port,
        }
    }

    /// May the port be closed or moved?
    pub(crate) fn check_idle(&self) -> Result<(), shmport_status> {
        if self.live.get() != 0 || self.reservation.borrow().is_some() || self.in_set.get() != 0 {
            return Err(SHMPORT_ERR_BUSY);
        }
        Ok(())
    }

    /// One more message borrows the port.
    #[inline]
    pub(crate) fn add_message(&self) {
        self.live.set(self.live.get() + 1);
    }

    /// A message that borrowed the port is gone.
    #[inline]
    pub(crate) fn remove_message(&self) {
        self.live.set(self.live.get() - 1);
    }

    /// A free slot for a message received from this port: a kept one if
    /// any (no lock), else one from the shared list.
    #[inline]
    pub(crate) fn message_slot(&self) -> Result<Vacant<MessageState>, shmport_status> {
        match self.spare.take() {
            Some(slot) => Ok(slot),
            None => self.message_slot_slow(),
        }
    }

    #[cold]
    fn message_slot_slow(&self) -> Result<Vacant<MessageState>, shmport_status> {
        match self.spares.borrow_mut().pop() {
            Some(slot) => Ok(slot),
            None => MESSAGES.vacant().ok_or_else(no_memory),
        }
    }

    /// Keep a free message slot for this port's next message.
    #[inline]
    pub(crate) fn keep_message_slot(&self, slot: Vacant<MessageState>) {
        if let Some(other) = self.spare.replace(Some(slot)) {
            self.keep_more(other);
        }
    }

    #[cold]
    fn keep_more(&self, slot: Vacant<MessageState>) {
        self.spares.borrow_mut().push(slot);
    }

    /// The port, for its new owner; the message slots it kept go back to
    /// the shared list.
    pub(crate) fn into_port(self) -> MessagePort {
        MESSAGES.release(
            self.spare
                .into_inner()
                .into_iter()
                .chain(self.spares.into_inner()),
        );
        self.port
    }
}

/// Ports by handle. `None` only while the port is taken out for a transfer
/// (within one `shmport_port_post_with_ports` call).
pub(crate) static PORTS: Registry<Option<PortState>> = Registry::new(Kind::Port);

/// The port a handle names.
///
/// The reference is used only during the current call, or stored in a
/// message or reservation of this port or in a port set (which keep the
/// port from being removed): the contract of [`Registry::get`].
#[inline]
pub(crate) fn port_state(port: *mut shmport_port) -> Result<&'static PortState, shmport_status> {
    let h = handle(port)?;
    // SAFETY: see above; the C contract keeps other threads off this handle
    // during the call.
    unsafe { PORTS.get(h) }?
        .as_ref()
        .ok_or(SHMPORT_ERR_BAD_HANDLE)
}

/// Take a port out of its slot, keeping its handle live: for closing
/// (then `retire`) or for a transfer (then `restore` or `retire`).
///
/// # Safety
/// The port is idle (no message or reservation refers to it) and no
/// reference from [`port_state`] to it is used afterwards.
pub(crate) unsafe fn take_out(port: *mut shmport_port) -> Result<PortState, shmport_status> {
    // SAFETY: the caller's contract: nothing else refers to the slot.
    unsafe { PORTS.get_mut(handle(port)?) }?
        .take()
        .ok_or(SHMPORT_ERR_BAD_HANDLE)
}

/// Put a port taken out back under its handle.
///
/// # Safety
/// `port` was taken out by [`take_out`] in this call.
pub(crate) unsafe fn restore(
    port: *mut shmport_port,
    state: PortState,
) -> Result<(), shmport_status> {
    // SAFETY: the caller's contract: the slot is live and empty.
    *unsafe { PORTS.get_mut(handle(port)?) }? = Some(state);
    Ok(())
}

/// Release the handle of a port taken out.
///
/// # Safety
/// `port` was taken out by [`take_out`] in this call.
pub(crate) unsafe fn retire(port: *mut shmport_port) -> Result<(), shmport_status> {
    // SAFETY: the caller's contract: the slot is live and empty, nothing
    // refers to it.
    let (_, slot) = unsafe { PORTS.remove(handle(port)?) }?;
    PORTS.recycle(slot);
    Ok(())
}

/// A new handle for a port.
pub(crate) fn new_port_handle(port: MessagePort) -> Result<*mut shmport_port, shmport_status> {
    PORTS
        .insert(Some(PortState::new(port)))
        .map(to_ptr)
        .ok_or_else(no_memory)
}
