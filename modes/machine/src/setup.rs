//! Building the VMM-owned structures in guest memory: page tables, GDT, IDT, TSS, the
//! fault stubs and the boot-info page.

use kvm_bindings::{kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use contract::abi::{self, boot_info, layout, selector};

pub use contract::x86::pte;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.UMIP: SGDT/SIDT/SLDT/SMSW/STR fault at CPL > 0.
pub const CR4_UMIP: u64 = 1 << 11;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Size of one fault stub in bytes (256 of them fill one page).
pub const STUB_SIZE: u64 = 16;

/// Size of the TSS including the I/O bitmap (65536 bits) and its terminating 0xFF byte.
pub const TSS_SIZE: u64 = layout::TSS_IOMAP_OFFSET + 8192 + 1;

/// Who the guest's code runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestPrivilege {
    /// CPL 0: the guest owns the (virtual) machine.
    Kernel,
    /// CPL 3 with IOPL 0: deprivileged under a monitor.
    User,
}

/// Writes a value, mapping the (impossible for in-RAM constants) error to a panic-free
/// `Result`.
fn put<T: vm_memory::ByteValued>(mem: &GuestMemoryMmap, addr: u64, v: T) -> Result<(), String> {
    mem.write_obj(v, GuestAddress(addr))
        .map_err(|e| format!("write at {addr:#x}: {e}"))
}

/// Builds the identity-mapped page tables described in [`contract::abi`]: guest RAM from 0
/// (user, writable), the scratch page, the MMIO page, and the monitor's region —
/// supervisor-only except its shared pages.
pub fn write_page_tables(mem: &GuestMemoryMmap, ram_size: u64) -> Result<(), String> {
    let user = pte::P | pte::RW | pte::US;
    put(mem, layout::PML4, layout::PDPT | user)?;
    put(mem, layout::PDPT, layout::PD | user)?;
    put(mem, layout::PDPT + 8, layout::PD_MONITOR | user)?;
    put(mem, layout::PD, layout::PT0 | user)?;
    // The first 2 MiB of RAM in 4 KiB pages, page 0 included: all the guest's.
    for i in 0..512u64 {
        put(mem, layout::PT0 + i * 8, (i * abi::PAGE_SIZE) | user)?;
    }
    for i in 1..ram_size / (2 << 20) {
        put(mem, layout::PD + i * 8, (i * (2 << 20)) | user | pte::PS)?;
    }
    let scratch_pd_index = layout::SCRATCH_VA >> 21;
    put(
        mem,
        layout::PD + scratch_pd_index * 8,
        layout::SCRATCH_PT | user,
    )?;
    put(mem, layout::SCRATCH_PT, layout::SCRATCH_FRAME_A | user)?;
    let mmio_pd_index = layout::MMIO_BASE >> 21;
    put(
        mem,
        layout::PD + mmio_pd_index * 8,
        layout::MMIO_BASE | user | pte::PS,
    )?;
    // The monitor's region: its structures supervisor-only, the shared pages user.
    let monitor_pd_index = (layout::MONITOR_BASE >> 21) & 511;
    put(
        mem,
        layout::PD_MONITOR + monitor_pd_index * 8,
        layout::PT_MONITOR | user,
    )?;
    // The shadow pool: one supervisor-only 2 MiB page (the monitor's routine writes the
    // shadow tables through it; the guest never reaches it).
    put(
        mem,
        layout::PD_MONITOR + ((layout::SHADOW_BASE >> 21) & 511) * 8,
        layout::SHADOW_BASE | pte::P | pte::RW | pte::PS,
    )?;
    let mut page = layout::MONITOR_BASE;
    while page < layout::MONITOR_END {
        let flags = if layout::is_shared_page(page) {
            user
        } else {
            pte::P | pte::RW
        };
        set_page_flags(mem, page, flags)?;
        page += abi::PAGE_SIZE;
    }
    set_page_flags(mem, layout::EVENT_STACK, user)?;
    Ok(())
}

pub use contract::abi::layout::pte_address;

/// Maps `page` (see [`pte_address`]) to itself with `flags`.
pub fn set_page_flags(mem: &GuestMemoryMmap, page: u64, flags: u64) -> Result<(), String> {
    let page = page & !(abi::PAGE_SIZE - 1);
    let at = pte_address(page).ok_or_else(|| format!("{page:#x} has no 4 KiB mapping"))?;
    put(mem, at, page | flags)
}

/// The encoded 8-byte GDT descriptors, indexed by selector / 8 (the TSS takes two).
pub fn gdt_entries() -> [u64; 7] {
    let base = layout::TSS;
    let limit = TSS_SIZE - 1;
    let tss_low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89u64 << 40) // present, DPL 0, type 9 (available 64-bit TSS)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    let tss_high = base >> 32;
    [
        0,
        0x00AF_9A00_0000_FFFF, // 0x08 kernel code, 64-bit
        0x00CF_9200_0000_FFFF, // 0x10 kernel data
        0x00CF_F200_0000_FFFF, // 0x18 user data, DPL 3
        0x00AF_FA00_0000_FFFF, // 0x20 user code, 64-bit, DPL 3
        tss_low,
        tss_high,
    ]
}

/// Machine code of the stub for `vector`: push a zero error code when the CPU does not
/// push one, push the vector, report to the VMM with `out FAULT, al`, then drop both and
/// `iretq` (the VMM may have edited the frame in between).
pub fn fault_stub(vector: u8) -> Vec<u8> {
    let mut code = Vec::with_capacity(STUB_SIZE as usize);
    if !abi::pushes_error_code(vector) {
        code.extend_from_slice(&[0x6A, 0x00]); // push 0
    }
    code.push(0x68); // push imm32
    code.extend_from_slice(&u32::from(vector).to_le_bytes());
    code.extend_from_slice(&[0xE6, abi::port::FAULT as u8]); // out FAULT, al
    code.extend_from_slice(&[0x48, 0x83, 0xC4, 0x10]); // add rsp, 16
    code.extend_from_slice(&[0x48, 0xCF]); // iretq
    code
}

/// Offset of the `out` instruction inside the stub for `vector` (the RIP of the exit).
pub fn fault_stub_out_offset(vector: u8) -> u64 {
    if abi::pushes_error_code(vector) {
        5
    } else {
        7
    }
}

/// Writes GDT, IDT (256 interrupt gates to the stubs, DPL 0), stubs and TSS.
pub fn write_descriptor_tables(mem: &GuestMemoryMmap) -> Result<(), String> {
    for (i, d) in gdt_entries().iter().enumerate() {
        put(mem, layout::GDT + i as u64 * 8, *d)?;
    }
    for v in 0..=255u8 {
        let stub = layout::STUBS + u64::from(v) * STUB_SIZE;
        mem.write_slice(&fault_stub(v), GuestAddress(stub))
            .map_err(|e| format!("stub {v}: {e}"))?;
        let (low, high) = interrupt_gate(stub, selector::KERNEL_CODE, 0);
        put(mem, layout::IDT + u64::from(v) * 16, low)?;
        put(mem, layout::IDT + u64::from(v) * 16 + 8, high)?;
    }
    // TSS: RSP0 at offset 4, I/O map base at offset 0x66, then a bitmap that denies
    // every port to CPL 3 until an engine opens one.
    put(mem, layout::TSS + 4, layout::MONITOR_STACK_TOP)?;
    put(mem, layout::TSS + 0x66, layout::TSS_IOMAP_OFFSET as u16)?;
    let bitmap = vec![0xFFu8; 8192 + 1];
    mem.write_slice(
        &bitmap,
        GuestAddress(layout::TSS + layout::TSS_IOMAP_OFFSET),
    )
    .map_err(|e| format!("I/O bitmap: {e}"))?;
    Ok(())
}

pub use contract::x86::interrupt_gate;

/// Lets CPL 3 code use `port` directly (its `in`/`out` then exit without a #GP).
pub fn open_io_port(mem: &GuestMemoryMmap, port: u16) -> Result<(), String> {
    let addr = layout::TSS + layout::TSS_IOMAP_OFFSET + u64::from(port / 8);
    let byte: u8 = mem
        .read_obj(GuestAddress(addr))
        .map_err(|e| e.to_string())?;
    put(mem, addr, byte & !(1 << (port % 8)))
}

/// Values the boot-info page carries besides the constants.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootInfo {
    /// Guest RAM size.
    pub ram_size: u64,
    /// [`abi::flavour`] value.
    pub flavour: u64,
    /// Shared-info page (paravirt).
    pub shared_info: u64,
    /// Hypercall port (paravirt).
    pub hypercall_port: u64,
    /// vCPU TSC kHz.
    pub tsc_khz: u64,
    /// The virtio-blk completion interrupt's vector, or 0 when the driver polls.
    pub blk_completion_vector: u64,
}

/// Writes the boot-info page.
pub fn write_boot_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), String> {
    let b = layout::BOOT_INFO;
    let fields = [
        (boot_info::MAGIC, abi::BOOT_INFO_MAGIC),
        (boot_info::ABI_VERSION, abi::ABI_VERSION),
        (boot_info::RAM_SIZE, info.ram_size),
        (boot_info::FLAVOUR, info.flavour),
        (boot_info::SHARED_INFO, info.shared_info),
        (boot_info::HYPERCALL_PORT, info.hypercall_port),
        (boot_info::MMIO_BASE, layout::MMIO_BASE),
        (boot_info::SCRATCH_VA, layout::SCRATCH_VA),
        (boot_info::SCRATCH_PTE, layout::SCRATCH_PT),
        (boot_info::SCRATCH_FRAME_A, layout::SCRATCH_FRAME_A),
        (boot_info::SCRATCH_FRAME_B, layout::SCRATCH_FRAME_B),
        (boot_info::TIMER_VECTOR, u64::from(abi::TIMER_VECTOR)),
        (boot_info::TSC_KHZ, info.tsc_khz),
        (boot_info::MONITOR_BASE, layout::MONITOR_BASE),
        (boot_info::MONITOR_SIZE, layout::MONITOR_SIZE),
        (boot_info::BLK_COMPLETION_VECTOR, info.blk_completion_vector),
    ];
    for (off, v) in fields {
        put(mem, b + off, v)?;
    }
    Ok(())
}

fn segment(sel: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: sel,
        type_: if code { 0xB } else { 0x3 },
        present: 1,
        dpl,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets the special registers for 64-bit long mode with our GDT, IDT, TSS and paging.
pub fn long_mode_sregs(sregs: &mut kvm_sregs, privilege: GuestPrivilege, umip: bool) {
    let (cs, ds, dpl) = match privilege {
        GuestPrivilege::Kernel => (selector::KERNEL_CODE, selector::KERNEL_DATA, 0),
        GuestPrivilege::User => (selector::USER_CODE, selector::USER_DATA, 3),
    };
    sregs.cs = segment(cs, true, dpl);
    let data = segment(ds, false, dpl);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: layout::TSS,
        limit: (TSS_SIZE - 1) as u32,
        selector: selector::TSS,
        type_: 0xB, // busy 64-bit TSS
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = (gdt_entries().len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = layout::PML4;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if umip { CR4_UMIP } else { 0 };
    sregs.efer = EFER_LME | EFER_LMA;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_fit_and_report_at_the_out() {
        for v in 0..=255u8 {
            let s = fault_stub(v);
            assert!(s.len() as u64 <= STUB_SIZE, "stub {v} is {} bytes", s.len());
            let off = fault_stub_out_offset(v) as usize;
            assert_eq!(s[off], 0xE6, "vector {v}");
            assert_eq!(s[off + 1], abi::port::FAULT as u8);
        }
    }

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let g = gdt_entries();
        let low = g[(selector::TSS / 8) as usize];
        assert_eq!(low & 0xFFFF, (TSS_SIZE - 1) & 0xFFFF);
        assert_eq!((low >> 16) & 0xFF_FFFF, layout::TSS & 0xFF_FFFF);
        assert_eq!((low >> 40) & 0xFF, 0x89);
    }
}
