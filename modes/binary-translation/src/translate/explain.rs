//! What the translator makes of a guest, for people: each guest basic block beside its
//! translation, each guest instruction marked with what became of it, and the words a
//! trace says about one entry into the VMM. Pure: built on [`translate`] and the
//! [`Cache`]'s read-only queries, no KVM.
//!
//! [`explain`] finds the blocks a run would translate by following the guest's control
//! flow from its entry point: fall-through, direct branch targets, the return address of
//! every direct call, and the instruction after a callout that ends its block (`hlt`).
//! Code reached only through the guest's IDT or an indirect branch to somewhere else is
//! not found this way, and a run translates blocks in the order it executes them, so the
//! translation-cache addresses shown are where this order would place them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::{self, Write as _};

use contract::{GuestImage, TraceNote};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Formatter, Instruction, IntelFormatter};
use iced_x86::{Mnemonic, OpKind};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::cache::{Cache, Entry};
use crate::layout;
use crate::translate::{self, is_callout, Block, Site, Stats, TranslateError};

/// Most blocks [`explain`] follows (a guest bigger than this is cut, and says so).
pub const MAX_BLOCKS: usize = 256;

/// What became of one guest instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Copied (re-encoded for its new address): runs at native speed.
    Copied,
    /// Rewritten inline against the virtual CPU in the data page (CLI, STI, PUSHF, POPF).
    Inline,
    /// A `ud2` the VMM recognizes: it emulates the guest instruction.
    Callout,
    /// A direct branch to a chaining stub, patched into a jump on first use.
    Chain,
    /// An indirect branch or return: the target through the lookup routine.
    Lookup,
}

impl Kind {
    /// The words the tables use.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Copied => "copied",
            Kind::Inline => "rewritten inline",
            Kind::Callout => "callout",
            Kind::Chain => "chaining stub",
            Kind::Lookup => "lookup",
        }
    }

    /// What the translator makes of `insn` (the same decision as [`translate::translate`]).
    pub fn of(insn: &Instruction) -> Kind {
        if !insn.is_invalid() {
            match insn.mnemonic() {
                Mnemonic::Cli | Mnemonic::Sti | Mnemonic::Pushfq | Mnemonic::Popfq => {
                    return Kind::Inline
                }
                _ => {}
            }
        }
        if is_callout(insn) {
            return Kind::Callout;
        }
        match insn.flow_control() {
            FlowControl::Next => Kind::Copied,
            FlowControl::UnconditionalBranch | FlowControl::Call
                if insn.op0_kind() == OpKind::NearBranch64 =>
            {
                Kind::Chain
            }
            FlowControl::ConditionalBranch => Kind::Chain,
            FlowControl::Return if insn.mnemonic() == Mnemonic::Ret => Kind::Lookup,
            FlowControl::IndirectBranch | FlowControl::IndirectCall
                if insn.op0_kind() == OpKind::Register
                    || (insn.op0_kind() == OpKind::Memory
                        && insn.memory_size() == iced_x86::MemorySize::UInt64) =>
            {
                Kind::Lookup
            }
            _ => Kind::Callout,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One guest instruction and its translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Guest RIP.
    pub guest: u64,
    /// The guest instruction (Intel syntax).
    pub text: String,
    /// What became of it.
    pub kind: Kind,
    /// For a callout, the name the VMM counts it under (`out`, `mov to cr8`…).
    pub callout: Option<String>,
    /// For a direct branch, its guest target(s): taken, then (for a conditional branch)
    /// not taken.
    pub targets: Vec<u64>,
    /// TC address of its translation.
    pub tc: u64,
    /// Its translation, one translated instruction each (Intel syntax).
    pub translation: Vec<String>,
}

/// A chaining stub at the end of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stub {
    /// Its TC address.
    pub tc: u64,
    /// The guest RIP whose translation it is patched to reach.
    pub target: u64,
}

/// One guest basic block and its translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockView {
    /// Guest RIP of its first instruction.
    pub guest: u64,
    /// The end of the guest bytes it covers.
    pub guest_end: u64,
    /// Its TC address.
    pub tc: u64,
    /// Bytes of translation (code and stubs).
    pub tc_len: u64,
    /// Its instructions.
    pub lines: Vec<Line>,
    /// `jmp` to the next guest instruction's stub, when control falls off the block.
    pub fall_through: Option<String>,
    /// Its chaining stubs.
    pub stubs: Vec<Stub>,
    /// What it is made of.
    pub stats: Stats,
}

/// A guest's blocks and their translations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The image's name.
    pub image: String,
    /// Its entry point.
    pub entry: u64,
    /// Where the shared lookup routine is, and its length.
    pub lookup: (u64, u64),
    /// The blocks, in the order they were found.
    pub blocks: Vec<BlockView>,
    /// Branch targets outside the image (not translated here).
    pub outside: Vec<u64>,
    /// Whether [`MAX_BLOCKS`] cut the search.
    pub cut: bool,
}

impl Explanation {
    /// The sum of every block's [`Stats`].
    pub fn stats(&self) -> Stats {
        self.blocks.iter().fold(Stats::default(), |mut s, b| {
            s.copied += b.stats.copied;
            s.inline += b.stats.inline;
            s.callouts += b.stats.callouts;
            s.branches += b.stats.branches;
            s
        })
    }

    /// How many guest instructions of each kind.
    pub fn kinds(&self) -> BTreeMap<Kind, u64> {
        let mut m = BTreeMap::new();
        for l in self.blocks.iter().flat_map(|b| &b.lines) {
            *m.entry(l.kind).or_insert(0) += 1;
        }
        m
    }
}

/// Reads `image`'s bytes at guest address `addr` (nothing outside the image).
pub fn image_reader(image: &GuestImage) -> impl FnMut(u64, &mut [u8]) -> usize + '_ {
    move |addr, buf| {
        let Some(off) = addr.checked_sub(image.load_addr) else {
            return 0;
        };
        let Ok(off) = usize::try_from(off) else {
            return 0;
        };
        if off >= image.bytes.len() {
            return 0;
        }
        let n = buf.len().min(image.bytes.len() - off);
        buf[..n].copy_from_slice(&image.bytes[off..off + n]);
        n
    }
}

/// The guest RIPs of the blocks a run of `image` translates, found from its entry point
/// (see the module's documentation), with the branch targets outside the image, and
/// whether [`MAX_BLOCKS`] cut the search.
pub fn block_starts(image: &GuestImage) -> Result<(Vec<u64>, Vec<u64>, bool), TranslateError> {
    let (blocks, outside, cut) = discover(image, layout::TC)?;
    Ok((blocks.iter().map(|b| b.guest).collect(), outside, cut))
}

fn in_image(image: &GuestImage, a: u64) -> bool {
    a >= image.load_addr && a - image.load_addr < image.bytes.len() as u64
}

fn align16(a: u64) -> u64 {
    (a + 15) & !15
}

/// The blocks, translated and placed one after the other from after the lookup routine
/// at `lookup`, as the cache places them.
fn discover(
    image: &GuestImage,
    lookup: u64,
) -> Result<(Vec<Block>, Vec<u64>, bool), TranslateError> {
    let (routine, _) = translate::lookup_routine(lookup)?;
    let mut at = align16(lookup + routine.len() as u64);
    let mut seen = BTreeSet::from([image.entry]);
    let mut queue = VecDeque::from([image.entry]);
    let mut outside = BTreeSet::new();
    let mut blocks = Vec::new();
    let mut read = image_reader(image);
    while let Some(rip) = queue.pop_front() {
        if blocks.len() == MAX_BLOCKS {
            return Ok((blocks, outside.into_iter().collect(), true));
        }
        let b = translate::translate(&mut read, rip, at, lookup)?;
        at = align16(b.tc + b.code.len() as u64);
        let mut next = Vec::new();
        for (_, site) in &b.sites {
            match *site {
                Site::Branch { target } => next.push(target),
                Site::Callout {
                    next: after,
                    resume: None,
                    ..
                } => next.push(after),
                Site::Callout { .. } => {}
            }
        }
        // The return address of a direct call (reached later through the lookup routine).
        if let Some(&(last, _)) = b.insns.last() {
            let insn = decode(&mut read, last);
            if insn.flow_control() == FlowControl::Call
                || insn.flow_control() == FlowControl::IndirectCall
            {
                next.push(insn.next_ip());
            }
        }
        for t in next {
            if !in_image(image, t) {
                outside.insert(t);
            } else if seen.insert(t) {
                queue.push_back(t);
            }
        }
        blocks.push(b);
    }
    Ok((blocks, outside.into_iter().collect(), false))
}

fn decode(read: &mut dyn FnMut(u64, &mut [u8]) -> usize, at: u64) -> Instruction {
    let mut bytes = [0u8; 15];
    let n = read(at, &mut bytes);
    Decoder::with_ip(64, &bytes[..n], at, DecoderOptions::NONE).decode()
}

fn text_of(insn: &Instruction) -> String {
    if insn.is_invalid() {
        return "(invalid)".into();
    }
    let mut s = String::new();
    let mut f = IntelFormatter::new();
    f.options_mut().set_show_branch_size(false);
    f.options_mut().set_branch_leading_zeros(false);
    f.format(insn, &mut s);
    s
}

/// The translated instructions in `code` (at `tc`) between `from` and `to`.
fn decoded(code: &[u8], tc: u64, from: u64, to: u64) -> Vec<Instruction> {
    let lo = (from - tc) as usize;
    let hi = ((to - tc) as usize).min(code.len());
    Decoder::with_ip(64, &code[lo..hi], from, DecoderOptions::NONE)
        .into_iter()
        .collect()
}

/// The name the VMM counts a callout under.
fn callout_name(insn: &Instruction) -> String {
    match emulator::instructions::handler_for(insn) {
        Some(h) => h.name(insn),
        None => emulator::mnemonic_name(insn),
    }
}

fn view(b: &Block, read: &mut dyn FnMut(u64, &mut [u8]) -> usize) -> BlockView {
    let mut stubs: Vec<Stub> = b
        .sites
        .iter()
        .filter_map(|(tc, s)| match s {
            Site::Branch { target } => Some(Stub {
                tc: *tc,
                target: *target,
            }),
            Site::Callout { .. } => None,
        })
        .collect();
    stubs.sort_by_key(|s| s.tc);
    let code_end = stubs.first().map_or(b.tc + b.code.len() as u64, |s| s.tc);
    let mut lines = Vec::new();
    let mut fall_through = None;
    for (i, &(guest, tc)) in b.insns.iter().enumerate() {
        let insn = decode(read, guest);
        let kind = Kind::of(&insn);
        let end = b.insns.get(i + 1).map_or(code_end, |&(_, t)| t);
        let mut translated = decoded(&b.code, b.tc, tc, end);
        let last = i + 1 == b.insns.len();
        // Control falling off the end of the block: the `jmp` to the next one's stub.
        let open = match kind {
            Kind::Copied | Kind::Inline => true,
            Kind::Callout => b.sites.iter().any(|(_, s)| {
                matches!(s, Site::Callout { guest: g, resume: Some(_), .. } if *g == guest)
            }),
            Kind::Chain | Kind::Lookup => false,
        };
        if last && open && translated.len() > 1 {
            if let Some(j) = translated.pop() {
                fall_through = Some(text_of(&j));
            }
        }
        let targets = match kind {
            Kind::Chain if insn.flow_control() == FlowControl::ConditionalBranch => {
                vec![insn.near_branch_target(), insn.next_ip()]
            }
            Kind::Chain => vec![insn.near_branch_target()],
            _ => Vec::new(),
        };
        lines.push(Line {
            guest,
            text: text_of(&insn),
            kind,
            callout: (kind == Kind::Callout).then(|| callout_name(&insn)),
            targets,
            tc,
            translation: translated.iter().map(text_of).collect(),
        });
    }
    BlockView {
        guest: b.guest,
        guest_end: b.guest_end,
        tc: b.tc,
        tc_len: b.code.len() as u64,
        lines,
        fall_through,
        stubs,
        stats: b.stats,
    }
}

/// The blocks of `image` and their translations, as a run would lay them out after the
/// lookup routine at [`layout::TC`].
pub fn explain(image: &GuestImage) -> Result<Explanation, TranslateError> {
    let (routine, _) = translate::lookup_routine(layout::TC)?;
    let (blocks, outside, cut) = discover(image, layout::TC)?;
    let mut read = image_reader(image);
    Ok(Explanation {
        image: image.name.clone(),
        entry: image.entry,
        lookup: (layout::TC, routine.len() as u64),
        blocks: blocks.iter().map(|b| view(b, &mut read)).collect(),
        outside,
        cut,
    })
}

/// Pads `s` to `w` characters.
fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())))
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        writeln!(
            f,
            "{}: {} block{} from the entry point {:#x}, as binary translation rewrites them",
            self.image,
            self.blocks.len(),
            if self.blocks.len() == 1 { "" } else { "s" },
            self.entry
        )?;
        writeln!(
            f,
            "lookup routine at {:#x} ({} bytes): returns and indirect branches find their \
             target's translation there",
            self.lookup.0, self.lookup.1
        )?;
        let gw = 30;
        for (n, b) in self.blocks.iter().enumerate() {
            writeln!(f)?;
            writeln!(
                f,
                "block {} — guest {:#x}..{:#x} ({} instruction{}) → TC {:#x} ({} bytes)",
                n + 1,
                b.guest,
                b.guest_end,
                b.lines.len(),
                if b.lines.len() == 1 { "" } else { "s" },
                b.tc,
                b.tc_len
            )?;
            writeln!(
                f,
                "  {}  {}  {}  what",
                pad("guest", 8 + 2 + gw),
                pad("TC", 10),
                pad("translation", 36)
            )?;
            for l in &b.lines {
                let what = match l.kind {
                    Kind::Callout => format!(
                        "callout: the VMM emulates `{}`",
                        l.callout.as_deref().unwrap_or("?")
                    ),
                    Kind::Chain => format!(
                        "chaining stub → {}",
                        l.targets
                            .iter()
                            .map(|t| format!("{t:#x}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Kind::Lookup => "lookup: the target's translation from the table".into(),
                    k => k.name().to_string(),
                };
                let mut first = true;
                for t in l
                    .translation
                    .iter()
                    .map(String::as_str)
                    .chain(l.translation.is_empty().then_some("(nothing)"))
                {
                    if first {
                        writeln!(
                            f,
                            "  {:<8x}  {}  {:<10x}  {}  {what}",
                            l.guest,
                            pad(&l.text, gw),
                            l.tc,
                            pad(t, 36)
                        )?;
                        first = false;
                    } else {
                        writeln!(
                            f,
                            "  {}  {}  {}",
                            pad("", 8 + 2 + gw),
                            pad("", 10),
                            t.trim_end()
                        )?;
                    }
                }
            }
            if let Some(j) = &b.fall_through {
                writeln!(
                    f,
                    "  {}  {}  {}  falls through: chaining stub → {:#x}",
                    pad("", 8 + 2 + gw),
                    pad("", 10),
                    pad(j, 36),
                    b.guest_end
                )?;
            }
            for st in &b.stubs {
                writeln!(
                    f,
                    "  {}  {:<10x}  {}  stub: patched into `jmp` to the translation of {:#x} \
                     on first use",
                    pad("", 8 + 2 + gw),
                    st.tc,
                    pad("ud2; nop; nop; nop", 36),
                    st.target
                )?;
            }
        }
        writeln!(f)?;
        let mut summary = String::new();
        for (k, v) in self.kinds() {
            let _ = write!(
                summary,
                "{}{k} {v}",
                if summary.is_empty() { "" } else { ", " }
            );
        }
        writeln!(f, "instructions: {summary}")?;
        writeln!(
            f,
            "translation counters of these blocks: copied {}, inline {}, callout sites {}, \
             branches {}",
            s.copied, s.inline, s.callouts, s.branches
        )?;
        if !self.outside.is_empty() {
            writeln!(
                f,
                "not translated here (outside the image): {}",
                self.outside
                    .iter()
                    .map(|t| format!("{t:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if self.cut {
            writeln!(f, "(cut after {MAX_BLOCKS} blocks)")?;
        }
        writeln!(
            f,
            "note: blocks are found from the entry point by direct flow; code reached only \
             through the guest's IDT or an indirect jump is translated when a run reaches \
             it, and a run places blocks in the order it executes them"
        )
    }
}

/// The trace note of one VMM entry, for a handler that was traced: `entry` is what the
/// fault at TC address `tc_rip` was (`None`: a real fault of translated code), `name` what
/// the entry is counted as, `vif_after` the virtual IF after the VMM handled it (the one
/// before is still in the data page), and `resume` the TC address the guest resumes at
/// (`None`: the run ends). Call it after handling the entry and before the data page's
/// virtual IF is written back.
#[allow(clippy::too_many_arguments)]
pub fn note(
    cache: &Cache,
    mem: &GuestMemoryMmap,
    read: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    tc_rip: u64,
    entry: Option<Entry>,
    name: &str,
    vif_after: bool,
    resume: Option<u64>,
) -> TraceNote {
    let vif_before = mem
        .read_obj::<u64>(GuestAddress(layout::VIF))
        .map(|v| v & 0x200 != 0)
        .unwrap_or(false);
    let target_of = |tc: u64| cache.guest_of(tc).map(|(g, _)| g);
    let resumed = |tc: Option<u64>| match tc {
        None => "the run ends".to_string(),
        Some(tc) => match target_of(tc) {
            Some(g) => format!("resume at {tc:#x} (translation of {g:#x})"),
            None => format!("resume at {tc:#x}"),
        },
    };
    let block = |tc: u64| {
        cache
            .guest_of(tc)
            .map(|(g, b)| {
                format!(
                    "translation of {g:#x} at {tc:#x} ({} instruction{}, {} bytes)",
                    b.insns.len(),
                    if b.insns.len() == 1 { "" } else { "s" },
                    b.code.len()
                )
            })
            .unwrap_or_else(|| format!("{tc:#x}"))
    };
    let (rip, instruction, action) = match entry {
        Some(Entry::Site(Site::Branch { target })) => (
            Some(target),
            Some(format!("chaining stub at {tc_rip:#x}")),
            match resume {
                Some(tc) => format!("stub patched into `jmp {tc:#x}`: {}", block(tc)),
                None => "the run ends".into(),
            },
        ),
        Some(Entry::LookupMiss) => {
            let target = mem
                .read_obj::<u64>(GuestAddress(layout::TARGET))
                .unwrap_or(0);
            (
                Some(target),
                Some("lookup miss".into()),
                match resume {
                    Some(tc) => format!("table entry set: {}", block(tc)),
                    None => "the run ends".into(),
                },
            )
        }
        Some(Entry::Site(Site::Callout { guest, .. })) => {
            let insn = decode(read, guest);
            let mut what = vec![format!("callout at {tc_rip:#x} emulated")];
            if vif_before != vif_after {
                what.push(format!(
                    "vIF {} → {}",
                    u8::from(vif_before),
                    u8::from(vif_after)
                ));
            }
            let same = resume == Some(tc_rip + 2);
            what.push(if same {
                format!("resume after the `ud2` at {:#x}", resume.unwrap_or(0))
            } else {
                resumed(resume)
            });
            (Some(guest), Some(text_of(&insn)), what.join(", "))
        }
        None => {
            let guest = cache.guest_of(tc_rip).map(|(g, _)| g);
            let insn = guest.map(|g| text_of(&decode(read, g)));
            (
                guest,
                insn,
                format!(
                    "fault of translated code at {tc_rip:#x}, {}",
                    resumed(resume)
                ),
            )
        }
    };
    TraceNote {
        rip,
        instruction,
        event: name.to_string(),
        action,
    }
}

#[cfg(test)]
mod tests;
