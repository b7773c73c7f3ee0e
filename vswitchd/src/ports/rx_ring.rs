//! An AF_PACKET receive ring (PACKET_MMAP, TPACKET_V2), shared with the
//! kernel, so that receiving a frame costs the switch no system call.
//!
//! Why: with `recvmmsg` the switch's thread paid, per frame, for taking
//! the kernel's buffer off the socket, copying it out and freeing it. With
//! the ring, the kernel copies each frame into a ring slot as it delivers
//! it, in the sender's context, and the switch reads the slot in place.
//! Under a flood, this moves work from the switch to the sender, which is
//! also the one that should slow down.
//!
//! Layout: `FRAME_COUNT` slots of `FRAME_SIZE` bytes, each a
//! `tpacket2_hdr`, a `sockaddr_ll`, then the virtio-net header and the
//! frame at `tp_mac`. A slot belongs to the kernel while its status is
//! `TP_STATUS_KERNEL` and to us otherwise; the kernel fills slots in order
//! and we take and give them back in the same order, which is also what
//! the kernel's `poll` assumes (it looks at the slot before its own head).
//!
//! Frames bigger than a slot (64 KiB GSO frames, jumbo frames) do not fit.
//! With PACKET_COPY_THRESH set, the kernel still marks their place in the
//! ring, truncated and flagged `TP_STATUS_COPY`, and queues the whole frame
//! on the socket, where `recvmmsg` reads it: in ring order, so frames stay
//! in the order they came. If the socket's buffer is full too, the slot
//! holds only the truncated frame, which the port counts as truncated.
//!
//! Costs: `FRAME_SIZE * FRAME_COUNT` (2 MiB) of memory shared with the
//! kernel, per port, mapped once; a copy of each frame from its slot into
//! the batch being switched (the slot must go back to the kernel before
//! the frames are sent, or the ring would fill while a batch is in flight).

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys;
use crate::core::offload::VNET_HDR_LEN;

/// Room for frames up to about 1,970 bytes (a 1500-byte MTU with VLAN
/// tags) after the ring's own headers and the virtio-net header (about 76
/// bytes); bigger ones go to the socket.
const FRAME_SIZE: usize = 2048;
const FRAMES_PER_BLOCK: usize = 32;
const BLOCK_COUNT: usize = 32;
const FRAME_COUNT: usize = FRAMES_PER_BLOCK * BLOCK_COUNT;
/// Where the `sockaddr_ll` sits in a slot: after the header, aligned.
const ADDR_OFFSET: usize = (std::mem::size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1)
    & !(libc::TPACKET_ALIGNMENT - 1);
const PKTTYPE_OFFSET: usize = ADDR_OFFSET + std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype);
/// Where the kernel may start writing the frame's bytes.
const DATA_OFFSET: usize = ADDR_OFFSET + std::mem::size_of::<libc::sockaddr_ll>();

pub struct RxRing {
    base: NonNull<u8>,
    /// The next slot to look at.
    head: usize,
}

// SAFETY: the mapping is owned by this value alone (the kernel only
// writes slots we gave back); moving it to another thread is fine.
unsafe impl Send for RxRing {}

/// One frame the kernel handed over, borrowed from its slot until
/// [`RxRing::release`].
pub struct RingFrame<'a> {
    /// The virtio-net header and the frame's first `snaplen` bytes.
    pub bytes: &'a [u8],
    /// The frame's length on the wire (more than captured if truncated).
    pub wire_len: usize,
    /// The whole frame waits on the socket (it did not fit the slot).
    pub on_socket: bool,
    pub pkttype: u8,
    /// (TPID, TCI) of a VLAN tag the kernel stripped.
    pub stripped_tag: Option<(u16, u16)>,
}

impl RxRing {
    /// Sets the socket up for a TPACKET_V2 receive ring and maps it. Must
    /// come after PACKET_VNET_HDR (which the kernel refuses once a ring
    /// exists) and before `bind`, so that every frame goes to the ring.
    pub fn attach(fd: RawFd) -> io::Result<RxRing> {
        sys::setsockopt_int(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as libc::c_int,
        )?;
        // Any non-zero value: frames too big for a slot go to the socket.
        sys::setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)?;
        let request = libc::tpacket_req {
            tp_block_size: (FRAME_SIZE * FRAMES_PER_BLOCK) as libc::c_uint,
            tp_block_nr: BLOCK_COUNT as libc::c_uint,
            tp_frame_size: FRAME_SIZE as libc::c_uint,
            tp_frame_nr: FRAME_COUNT as libc::c_uint,
        };
        sys::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &request)?;
        // SAFETY: maps the ring just configured on `fd`, at its exact size;
        // the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // Without this the kernel would keep filling a ring no one
            // reads, and the socket would see almost nothing.
            let none =
                libc::tpacket_req { tp_block_size: 0, tp_block_nr: 0, tp_frame_size: 0, tp_frame_nr: 0 };
            let _ = sys::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &none);
            return Err(e);
        }
        let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(RxRing { base, head: 0 })
    }

    /// The memory the ring maps.
    pub const BYTES: usize = FRAME_SIZE * FRAME_COUNT;

    fn slot(&self, i: usize) -> *mut u8 {
        debug_assert!(i < FRAME_COUNT);
        // SAFETY: `i < FRAME_COUNT` (the head wraps at it), so the slot lies
        // inside the mapping.
        unsafe { self.base.as_ptr().add(i * FRAME_SIZE) }
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: every slot starts with a 16-byte aligned tpacket2_hdr whose
        // first field is the status word the kernel and we hand over with;
        // it is only ever accessed atomically here.
        unsafe { AtomicU32::from_ptr(self.slot(i).cast()) }
    }

    /// The frame at the head of the ring, if the kernel has handed it over.
    pub fn peek(&self) -> Option<RingFrame<'_>> {
        let status = self.status(self.head).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        let slot = self.slot(self.head);
        // SAFETY: the slot is ours (status USER, loaded with Acquire, so the
        // kernel's writes to it are visible) until `release`, which needs
        // `&mut self` and so ends this borrow first.
        let slot: &[u8] = unsafe { std::slice::from_raw_parts(slot, FRAME_SIZE) };
        // SAFETY: the slot starts with a tpacket2_hdr (plain integers). Its
        // status word is read here non-atomically too, harmlessly: the
        // kernel does not write a slot that is ours.
        let header: libc::tpacket2_hdr = unsafe { std::ptr::read_unaligned(slot.as_ptr().cast()) };
        let mac = usize::from(header.tp_mac);
        let captured = header.tp_snaplen as usize;
        // A slot the kernel could not have written: show it as truncated.
        let bytes = match (mac.checked_sub(VNET_HDR_LEN), mac.checked_add(captured)) {
            (Some(from), Some(to)) if from >= DATA_OFFSET && to <= FRAME_SIZE => &slot[from..to],
            _ => &[][..],
        };
        let stripped_tag = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
            let tpid =
                if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { header.tp_vlan_tpid } else { 0x8100 };
            (tpid, header.tp_vlan_tci)
        });
        Some(RingFrame {
            bytes,
            wire_len: header.tp_len as usize,
            on_socket: status & libc::TP_STATUS_COPY != 0,
            pkttype: slot[PKTTYPE_OFFSET],
            stripped_tag,
        })
    }

    /// Gives the head slot back to the kernel and moves on to the next.
    pub fn release(&mut self) {
        self.status(self.head).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.head = (self.head + 1) % FRAME_COUNT;
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `attach` made; no borrow of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), Self::BYTES);
        }
    }
}
