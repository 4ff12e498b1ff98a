//! Property-based fuzzing of the decode-and-emulate path against the mock platform.
//!
//! A hostile guest controls the bytes at RIP, every general register, the memory its
//! operands point at, its IDT and its stack; the CPU adds the vector, the error code and
//! CR2. Each case builds such a state at random — random bytes, and privileged opcodes
//! with random prefixes, ModRM, SIB, displacements and immediates — and sends a short
//! sequence of traps through [`Emulator::handle`]. After every trap:
//!
//! * the emulator did not panic, and the trap ended in a classified result (resume, a
//!   completed run, or a `GuestFault` that names the trapping RIP and says why);
//! * the monitor's supervisor-only range (`MONITOR_BASE..MONITOR_PRIVATE_END`: page
//!   tables, GDT, IDT, TSS, stubs, stack, helpers) is byte for byte what it was;
//! * every present entry of the scratch page table (which only validated `pte write`s
//!   change, through `Platform::write_pte`) maps a frame of guest RAM or one of the two
//!   scratch frames;
//! * the virtual CPU changed only what the engine may honour (CR0/CR4 bits outside
//!   paging, CR3 a reload of the same tables, EFER.SCE/NXE, descriptor tables outside the
//!   monitor) and the real RFLAGS keep IF = 1 and IOPL = 0;
//! * a guest that resumes does so outside the monitor's private pages.
//!
//! The generators are here; [`invariants`] checks every property after each trap,
//! [`properties`] runs the fuzz cases and [`reach`] shows the generators get where it
//! matters.
//!
//! `cargo test -p emulator fuzz_` runs a few hundred cases; `PROPTEST_CASES=N` runs
//! `N` (see `docs/security.md` for a campaign).

use contract::abi::{layout, PAGE_SIZE};
use proptest::prelude::*;

use crate::instructions::mock::{CODE, STACK};
use contract::x86::vector::{GP, PF, UD};

mod invariants;
mod properties;
mod reach;

/// The mock's guest RAM (`Platform::ram_size`).
const RAM: u64 = 1 << 20;
/// Where the generated data (descriptor-table operands, PTE values, IDT) goes.
const DATA: u64 = 0x6_0000;
/// Where a generated guest IDT goes.
const GUEST_IDT: u64 = 0x4_0000;
/// The supervisor-only part of the monitor's region, which no trap may change.
const PRIVATE: std::ops::Range<u64> = layout::MONITOR_BASE..layout::MONITOR_PRIVATE_END;

/// Prefixes a guest may put in front of anything: operand and address size, REP/REPNE,
/// LOCK, segment overrides.
const PREFIXES: &[u8] = &[
    0x66, 0x67, 0xF2, 0xF3, 0xF0, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65,
];

/// Opcodes that are privileged, sensitive or emulated here, and the plain MOVs a PTE store
/// uses. Each is followed by random ModRM/SIB/displacement/immediate bytes, so every
/// register, memory form and `/digit` of the group opcodes comes up.
const OPCODES: &[&[u8]] = &[
    &[0xFA],       // cli
    &[0xFB],       // sti
    &[0xF4],       // hlt
    &[0xE4],       // in al, imm8
    &[0xE5],       // in eax, imm8
    &[0xE6],       // out imm8, al
    &[0xE7],       // out imm8, eax
    &[0xEC],       // in al, dx
    &[0xED],       // in eax, dx
    &[0xEE],       // out dx, al
    &[0xEF],       // out dx, eax
    &[0x6C],       // insb
    &[0x6D],       // insd
    &[0x6E],       // outsb
    &[0x6F],       // outsd
    &[0xCF],       // iret
    &[0x48, 0xCF], // iretq
    &[0xCD],       // int imm8
    &[0xCC],       // int3
    &[0xF1],       // int1
    &[0x9C],       // pushf
    &[0x9D],       // popf
    &[0x0F, 0x00], // sldt/str/lldt/ltr/verr/verw
    &[0x0F, 0x01], // sgdt/sidt/lgdt/lidt/smsw/lmsw/invlpg/swapgs/…
    &[0x0F, 0x06], // clts
    &[0x0F, 0x08], // invd
    &[0x0F, 0x09], // wbinvd
    &[0x0F, 0x20], // mov r, crN
    &[0x0F, 0x21], // mov r, drN
    &[0x0F, 0x22], // mov crN, r
    &[0x0F, 0x23], // mov drN, r
    &[0x0F, 0x30], // wrmsr
    &[0x0F, 0x31], // rdtsc
    &[0x0F, 0x32], // rdmsr
    &[0x0F, 0x33], // rdpmc
    &[0x0F, 0x05], // syscall
    &[0x0F, 0x07], // sysret
    &[0x0F, 0x35], // sysexit
    &[0x0F, 0x0B], // ud2
    &[0x0F, 0xA2], // cpuid
    &[0x88],       // mov r/m8, r8
    &[0x89],       // mov r/m, r
    &[0x8A],       // mov r8, r/m8
    &[0x8B],       // mov r, r/m
    &[0xC6],       // mov r/m8, imm8
    &[0xC7],       // mov r/m, imm32
    &[0x8C],       // mov r/m, sreg
    &[0x8E],       // mov sreg, r/m
];

/// Addresses a hostile guest would try: the monitor's structures, the scratch page table
/// and frames, the edges of RAM, non-canonical and wrapping values.
fn interesting_address() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0u64),
        Just(CODE),
        Just(STACK),
        Just(DATA),
        Just(DATA + 64),
        Just(DATA + 80),
        Just(DATA + 96),
        Just(GUEST_IDT),
        Just(RAM - 8),
        Just(RAM),
        Just(layout::PML4),
        Just(layout::GDT),
        Just(layout::IDT),
        Just(layout::TSS),
        Just(layout::STUBS),
        Just(layout::MONITOR_STACK_TOP),
        Just(layout::MONITOR_ROUTINE),
        Just(layout::BOOT_INFO),
        Just(layout::SCRATCH_FRAME_A),
        Just(layout::SCRATCH_FRAME_B),
        Just(layout::SHARED_INFO),
        Just(layout::MONITOR_END),
        Just(0x8000_0000_0000u64),
        Just(u64::MAX),
        Just(u64::MAX - 7),
        (0u64..512).prop_map(|i| layout::SCRATCH_PT + i * 8),
        (0u64..PAGE_SIZE).prop_map(|i| layout::SCRATCH_PT + i),
        (layout::MONITOR_BASE..layout::MONITOR_END),
        (0u64..RAM),
    ]
    .boxed()
}

/// A value for a register: an address, a small number (a port, an MSR index, a CR value,
/// a count) or anything.
fn register_value() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => interesting_address(),
        2 => any::<u64>(),
        1 => 0u64..0x100,
        1 => prop_oneof![
            Just(0xE9u64), Just(0xF0), Just(0xF4), Just(0xF8), Just(0xFC),
            Just(0xC000_0080), Just(0xC000_0100), Just(0x1B), Just(0x140), Just(0x277),
        ],
        1 => (interesting_address(), 0u64..0x1000).prop_map(|(a, f)| (a & !0xFFF) | f),
    ]
    .boxed()
}

/// Structured instruction bytes: up to three prefixes, an optional REX, an opcode of
/// [`OPCODES`], then random ModRM/SIB/displacement/immediate bytes (padding to 15 bytes;
/// the decoder takes what the opcode needs).
fn structured_instruction() -> BoxedStrategy<Vec<u8>> {
    (
        prop::collection::vec(prop::sample::select(PREFIXES), 0..3),
        prop::option::of(0x40u8..=0x4F),
        prop::sample::select(OPCODES),
        prop::collection::vec(any::<u8>(), 13),
    )
        .prop_map(|(prefixes, rex, opcode, tail)| {
            let mut b = prefixes;
            b.extend(rex);
            b.extend_from_slice(opcode);
            b.extend(tail);
            b.truncate(15);
            b
        })
        .boxed()
}

/// Opcodes with a ModRM memory operand that the emulator reads or writes.
const MEMORY_OPCODES: &[&[u8]] = &[
    &[0x0F, 0x01], // sgdt/sidt/lgdt/lidt/smsw/lmsw/invlpg
    &[0x0F, 0x00], // sldt/str/lldt/ltr/verr/verw
    &[0x89],       // mov [pt], r
    &[0x88],       // mov [pt], r8
    &[0x8B],       // mov r, [pt]
    &[0xC7],       // mov [pt], imm32
];

/// An instruction whose memory operand is `[base]` with `base` one of RAX, RCX, RDX,
/// RBX, RSI, RDI, and the address that register is to hold: LGDT of a table over the
/// monitor, SIDT into the monitor's stack, a PTE store… The address goes into the
/// register when the bench is built.
fn aimed_instruction() -> BoxedStrategy<(Vec<u8>, usize, u64)> {
    (
        prop::option::of(prop::sample::select(PREFIXES)),
        prop::option::of(Just(0x48u8)),
        prop::sample::select(MEMORY_OPCODES),
        0u8..8,
        prop::sample::select(&[0usize, 1, 2, 3, 6, 7][..]),
        prop::collection::vec(any::<u8>(), 4),
        prop_oneof![
            // the pseudo-descriptors over the monitor, a PTE, the monitor's own pages
            2 => prop::sample::select(&[DATA + 80, DATA + 96][..]),
            1 => (0u64..512).prop_map(|i| layout::SCRATCH_PT + i * 8),
            1 => prop::sample::select(&[
                layout::IDT, layout::GDT, layout::MONITOR_STACK_TOP - 16, layout::MONITOR_ROUTINE,
                layout::BOOT_INFO, layout::MONITOR_PRIVATE_END - 4,
            ][..]),
            1 => interesting_address(),
        ],
    )
        .prop_map(|(prefix, rex, opcode, reg, base, imm, addr)| {
            let mut b: Vec<u8> = prefix.into_iter().chain(rex).collect();
            b.extend_from_slice(opcode);
            b.push((reg << 3) | base as u8);
            b.extend(imm);
            (b, base, addr)
        })
        .boxed()
}

/// Instruction bytes: random, or structured.
fn instruction() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..=15),
        3 => structured_instruction(),
    ]
    .boxed()
}

/// One trap as the monitor stub reports it.
#[derive(Debug, Clone)]
struct Trap {
    vector: u8,
    error_code: u64,
    cr2: u64,
    /// New bytes at RIP before this trap (after a jump, the guest runs whatever is there).
    code: Option<Vec<u8>>,
}

fn trap() -> BoxedStrategy<Trap> {
    let vector = prop_oneof![
        6 => Just(GP),
        2 => Just(UD),
        3 => Just(PF),
        1 => 0u8..32,
        1 => any::<u8>(),
    ];
    let error_code = prop_oneof![0u64..32, Just(0b111), any::<u64>()];
    (
        vector,
        error_code,
        interesting_address(),
        prop::option::weighted(0.3, instruction()),
    )
        .prop_map(|(vector, error_code, cr2, code)| Trap {
            vector,
            error_code,
            cr2,
            code,
        })
        .boxed()
}

/// The guest's state at the first trap.
#[derive(Debug, Clone)]
struct Guest {
    code: Vec<u8>,
    /// A register the code uses as its memory operand's base, and its value.
    aim: Option<(usize, u64)>,
    gpr: [u64; 16],
    rip: Option<u64>,
    /// Arithmetic flags, DF, AC and TF: what a CPL 3 guest may set natively.
    rflags: u64,
    vif: bool,
    /// Handlers of a guest IDT, if the guest loaded one.
    idt: Option<Vec<(u8, u64)>>,
    /// Random bytes at [`DATA`], at the stack pointer and in the scratch frame B.
    data: Vec<u8>,
    stack: Vec<u8>,
    timer_armed: bool,
    timer_due: bool,
    traps: Vec<Trap>,
}

fn guest() -> BoxedStrategy<Guest> {
    // RSP (register 4) mostly a usable stack, so that reflected events can be pushed.
    let gpr = (
        prop::array::uniform16(register_value()),
        prop_oneof![3 => Just(STACK), 1 => register_value()],
    )
        .prop_map(|(mut gpr, rsp)| {
            gpr[4] = rsp;
            gpr
        });
    let rip = prop::option::weighted(0.2, prop_oneof![interesting_address(), (0u64..RAM - 16)]);
    let rflags = any::<u64>().prop_map(|f| 0x202 | (f & 0x24_0DD5) | (f & 0x100));
    // A guest IDT: usually a handler in RAM for every vector up to the timer's, so that
    // reflected exceptions resume the guest and the next traps are reached, then a few
    // gates of any vector with any handler (into the monitor, non-canonical…).
    let idt = prop::option::weighted(
        0.8,
        (
            prop::option::weighted(0.8, 0u64..RAM),
            prop::collection::vec((any::<u8>(), register_value()), 0..4),
        )
            .prop_map(|(common, odd)| {
                let mut gates: Vec<(u8, u64)> = common
                    .map(|h| (0..=0x20).map(|v| (v, h)).collect())
                    .unwrap_or_default();
                gates.extend(odd);
                gates
            }),
    );
    (
        (
            prop_oneof![
                3 => instruction().prop_map(|c| (c, None)),
                1 => aimed_instruction().prop_map(|(c, r, a)| (c, Some((r, a)))),
            ],
            gpr,
            rip,
            rflags,
            any::<bool>(),
            idt,
        ),
        (
            prop::collection::vec(any::<u8>(), 64),
            prop::collection::vec(any::<u8>(), 64),
            any::<bool>(),
            prop::bool::weighted(0.1),
            prop::collection::vec(trap(), 1..6),
        ),
    )
        .prop_map(
            |(
                ((code, aim), gpr, rip, rflags, vif, idt),
                (data, stack, timer_armed, timer_due, traps),
            )| {
                Guest {
                    code,
                    aim,
                    gpr,
                    rip,
                    rflags,
                    vif,
                    idt,
                    data,
                    stack,
                    timer_armed,
                    timer_due,
                    traps,
                }
            },
        )
        .boxed()
}

/// MOV forms that store into the page table at `[rdi]` (or `[rdi+disp8]`).
const PTE_STORES: &[&[u8]] = &[
    &[0x48, 0x89, 0x07], // mov [rdi], rax
    &[0x89, 0x07],       // mov [rdi], eax
    &[0x88, 0x07],       // mov [rdi], al
    &[0x66, 0x89, 0x07], // mov [rdi], ax
    &[0x48, 0xC7, 0x07], // mov qword [rdi], imm32
    &[0x48, 0x89, 0x47], // mov [rdi+disp8], rax
];

/// A guest whose first trap is a store into its page table: a MOV form (64, 32, 16 or 8
/// bits, from a register or an immediate) at an entry of the scratch table, of a random
/// value (often a present entry of an interesting frame).
fn pte_guest() -> BoxedStrategy<Guest> {
    (
        guest(),
        prop::sample::select(PTE_STORES),
        prop::collection::vec(any::<u8>(), 8),
        prop_oneof![3 => (0u64..512).prop_map(|i| i * 8), 1 => 0u64..PAGE_SIZE],
        prop_oneof![
            register_value(),
            (interesting_address(), 0u64..0x1000).prop_map(|(a, f)| (a & !0xFFF) | f | 1),
        ],
    )
        .prop_map(|(mut g, store, tail, slot, value)| {
            g.code = store.iter().chain(&tail).copied().collect();
            g.rip = None;
            g.aim = None;
            g.gpr[7] = layout::SCRATCH_PT + slot; // RDI: the entry
            g.gpr[0] = value; // RAX: the value
            g.traps[0] = Trap {
                vector: PF,
                error_code: 0b111,
                cr2: layout::SCRATCH_PT + slot,
                code: None,
            };
            g
        })
        .boxed()
}
